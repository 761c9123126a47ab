import torch

from focal_detect.anchors import AnchorGenerator
from focal_detect.init import prior_bias
from focal_detect.losses import FocalLossNormalizer, sigmoid_focal_loss_from_labels, smooth_l1_loss
from focal_detect.matching import assign_anchors

generator = AnchorGenerator()  # the paper's anchors: P3-P7, A = 9
sizes = generator.feature_sizes_for((256, 256))  # [(32, 32), (16, 16), ..., (2, 2)]
anchors = generator(sizes)  # Anchors: .boxes (N, 4), N = 9 * 1364 = 12276, and the grid layout

gt_boxes = [
    torch.tensor([[30.0, 40.0, 120.0, 150.0]]),
    torch.tensor([[10.0, 10.0, 60.0, 50.0], [100.0, 90.0, 250.0, 240.0]]),
]
gt_labels = [torch.tensor([2]), torch.tensor([0, 4])]
targets = assign_anchors(anchors, gt_boxes, gt_labels)  # the layout: exact windowed path

# Stand-ins for your heads' outputs; class logits start near the prior (Sec. 3.3).
B, N, K = 2, anchors.num_anchors, 5
cls_logits = (0.1 * torch.randn(B, N, K) + prior_bias(0.01)).requires_grad_()
box_deltas = (0.1 * torch.randn(B, N, 4)).requires_grad_()

fg = targets.foreground  # (B, N) bool
divisor = FocalLossNormalizer()(fg.sum())  # foreground anchors in the batch
cls_loss = sigmoid_focal_loss_from_labels(cls_logits, targets.labels, reduction="sum")
box_loss = smooth_l1_loss(box_deltas[fg], targets.box_targets[fg], beta=0.11, reduction="sum")
loss = (cls_loss + box_loss) / divisor
loss.backward()
print(f"foreground per image: {fg.sum(1).tolist()}, loss = {loss.item():.2f}")
