import torch

from focal_detect import BACKGROUND, IGNORE
from focal_detect.init import prior_bias
from focal_detect.losses import sigmoid_focal_loss_from_labels

torch.manual_seed(0)
B, N, K = 2, 1000, 80  # images, anchors, classes
# A freshly initialised classification head (paper, Section 3.3): small weights and the
# prior bias -log((1 - 0.01) / 0.01), so every anchor starts at p = 0.01 for every class.
logits = (0.01 * torch.randn(B, N, K) + prior_bias(0.01)).requires_grad_()
labels = torch.full((B, N), BACKGROUND)  # every anchor is background ...
labels[0, 3] = 7  # ... but two are foreground (class index)
labels[1, 42] = 0
labels[1, 43] = IGNORE  # IoU in [0.4, 0.5): contributes no loss

# Paper, Section 4: sum over all anchors, divide by the foreground count.
num_foreground = (labels >= 0).sum().clamp(min=1)
loss = sigmoid_focal_loss_from_labels(logits, labels, alpha=0.25, gamma=2.0, reduction="sum") / num_foreground
loss.backward()
print(f"loss = {loss.item():.3f}, grad shape = {tuple(logits.grad.shape)}")
