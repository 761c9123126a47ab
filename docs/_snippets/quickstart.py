import torch

from focal_detect import BACKGROUND, IGNORE
from focal_detect.losses import sigmoid_focal_loss_from_labels

B, N, K = 2, 1000, 80                   # images, anchors, classes
logits = torch.randn(B, N, K, requires_grad=True)  # your classification head
labels = torch.full((B, N), BACKGROUND) # every anchor is background ...
labels[0, 3] = 7                        # ... but two are foreground (class index)
labels[1, 42] = 0
labels[1, 43] = IGNORE                  # IoU in [0.4, 0.5): contributes no loss

# Paper, Section 4: sum over all anchors, divide by the foreground count.
num_foreground = (labels >= 0).sum().clamp(min=1)
loss = sigmoid_focal_loss_from_labels(logits, labels, alpha=0.25, gamma=2.0,
                                      reduction="sum") / num_foreground
loss.backward()
print(f"loss = {loss.item():.3f}, grad shape = {tuple(logits.grad.shape)}")
