r"""RetinaNet (Lin et al. 2017, Sec. 4): ResNet + FPN + two dense subnets + focal loss.

The model is assembled only from the library's public pieces:

========================  ==========================================================
step                      function / class
========================  ==========================================================
features C3–C5            :class:`focal_detect.models.backbone.ResNet`
pyramid P3–P7             :class:`focal_detect.models.fpn.FPN`
subnets                   :class:`RetinaNetHead` (:func:`focal_detect.init.init_conv_`,
                          :func:`focal_detect.init.init_prior_bias_`)
anchors                   :class:`focal_detect.anchors.AnchorGenerator`
assignment + targets      :func:`focal_detect.matching.assign_anchors` with a
                          :class:`focal_detect.coding.BoxCoder`
classification loss       :func:`focal_detect.losses.sigmoid_focal_loss_from_labels`
                          over all non-ignored anchors, divided by
                          :class:`focal_detect.losses.FocalLossNormalizer`
                          (or FL*, or OHEM with
                          :func:`focal_detect.sampling.ohem_sample`:
                          ``RetinaNetConfig.loss.cls_loss``)
box loss                  :func:`focal_detect.losses.smooth_l1_loss` (β = 0.11),
                          :func:`focal_detect.losses.l1_loss` or
                          :func:`focal_detect.losses.giou_loss` over foreground anchors
decoding                  :meth:`focal_detect.coding.BoxCoder.decode`
class-wise NMS            :func:`focal_detect.boxes.batched_nms`
========================  ==========================================================

Pre-processing follows torchvision's ``GeneralizedRCNNTransform``: normalise with
the pixel mean/std, resize so the short side is ``transform.min_size`` unless the long side
would exceed ``max_size`` (bilinear, boxes scaled likewise), then pad the batch at
the bottom/right to a multiple of ``size_divisible``. The default 128 (the stride
of P7) makes every level's stride exact, so anchors of every level sit exactly on
the feature grid. Detections are mapped back to each original image size.

Compilation: :meth:`RetinaNet.dense` (backbone, FPN and heads on a padded batch)
has static shapes; it compiles with ``torch.compile(fullgraph=True)`` and exports
with :func:`torch.export.export`. To compile the inference path, replace it on the
instance, ``model.dense = torch.compile(model.dense)``; ``forward`` then runs the
compiled network and the eager pre- and post-processing. Compiling the whole
``forward`` works too but is not useful: the number of scores above
``inference.score_threshold`` and of boxes surviving NMS depends on the data, and greedy NMS is
a data-dependent loop, so Dynamo breaks the graph and recompiles for new sizes.
For the same reason the post-processing cannot be exported as one graph: export
:meth:`RetinaNet.dense` and call :meth:`RetinaNet.postprocess` on its outputs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from focal_detect.anchors import AnchorGenerator
from focal_detect.boxes import batched_nms
from focal_detect.coding import BoxCoder
from focal_detect.constants import IGNORE
from focal_detect.losses import (
    FocalLossNormalizer,
    giou_loss,
    l1_loss,
    sigmoid_focal_loss_from_labels,
    sigmoid_focal_loss_star,
    smooth_l1_loss,
)
from focal_detect.matching import assign_anchors
from focal_detect.models.backbone import ResNet
from focal_detect.models.config import RetinaNetConfig
from focal_detect.models.fpn import FPN
from focal_detect.models.groups import BOX_LOSSES, CLS_LOSSES, LOSS_NORMALIZATIONS
from focal_detect.models.head import RetinaNetHead
from focal_detect.models.inputs import check_images, check_targets
from focal_detect.sampling import ohem_sample

# RetinaNetConfig, RetinaNetHead and the loss-name tuples are re-exported: their 0.1.0
# import path (focal_detect.models.retinanet) keeps working.
__all__ = ["BOX_LOSSES", "CLS_LOSSES", "LOSS_NORMALIZATIONS", "RetinaNet", "RetinaNetConfig", "RetinaNetHead"]


class RetinaNet(nn.Module):
    r"""RetinaNet with torchvision's detection interface.

    ``model(images, targets)``:

    * ``images``: a list of ``B`` float tensors ``(3, H_i, W_i)`` with values in
      ``[0, 1]``, or one tensor ``(B, 3, H, W)``. Any floating dtype (float16,
      bfloat16, float32, float64) is cast to the model's parameter dtype at the
      input; integer images (uint8 included) raise ``TypeError``: scale them with
      ``image.float() / 255`` (a silent guess of the value range could be wrong).
    * ``targets`` (training): a list of ``B`` dicts with ``"boxes"`` ``(M_i, 4)``
      in ``(x1, y1, x2, y2)`` pixels of the input image, ``"labels"`` ``(M_i,)``
      of any integer dtype (converted to int64) in ``[0, K)`` and optionally ``"iscrowd"`` ``(M_i,)`` (crowd boxes are
      not matched; anchors inside them are ignored).

    Training mode returns ``{"classification": L_cls, "bbox_regression": L_box}``:

    .. math::

        L_{cls} = \frac{1}{\max(1, N_{fg})} \sum_{i \notin \mathrm{ignored}}
        \sum_{k} \mathrm{FL}(p_{ik}), \qquad
        L_{box} = \frac{1}{\max(1, N_{fg})} \sum_{i \in \mathrm{fg}}
        \ell(\hat d_i, d_i)

    with :math:`N_{fg}` the batch's foreground anchors (or an EMA of it,
    all-reduced when distributed). Evaluation mode returns a list of ``B`` dicts
    with ``"boxes"`` ``(D_i, 4)`` in the original image's pixels, ``"scores"``
    ``(D_i,)`` and ``"labels"`` ``(D_i,)`` int64, sorted by decreasing score.

    Args:
        config: A :class:`RetinaNetConfig`; defaults to the paper's settings with
            80 classes.

    Raises:
        ValueError: Bad images or targets (shape, dtype, non-finite or inverted
            boxes, labels out of range), naming the argument.

    Example:
        >>> model = RetinaNet(RetinaNetConfig.preset("tiny", 2)).eval()
        >>> out = model([torch.rand(3, 64, 96)])
        >>> sorted(out[0]), out[0]["boxes"].shape[-1]
        (['boxes', 'labels', 'scores'], 4)
        >>> _ = model.train()
        >>> losses = model([torch.rand(3, 64, 96)],
        ...                [{"boxes": torch.tensor([[8.0, 8.0, 40.0, 48.0]]),
        ...                  "labels": torch.tensor([1])}])
        >>> sorted(losses), bool(losses["classification"] > 0)
        (['bbox_regression', 'classification'], True)
    """

    def __init__(self, config: RetinaNetConfig | None = None) -> None:
        super().__init__()
        if config is None:
            config = RetinaNetConfig()
        if not isinstance(config, RetinaNetConfig):
            raise TypeError(f"RetinaNet: config must be a RetinaNetConfig, got {type(config).__name__}")
        self.config = config
        b = config.backbone
        self.backbone = ResNet(
            b.depth, width=b.width, frozen_bn=b.frozen_bn, trainable_layers=b.trainable_layers
        )
        self.fpn = FPN(self.backbone.out_channels, config.fpn.channels, p6_from=config.fpn.p6_from)
        self.anchor_generator = AnchorGenerator(**config.anchors.generator_kwargs())
        self.head = RetinaNetHead(
            config.num_classes,
            self.anchor_generator.num_anchors_per_location,
            in_channels=config.fpn.channels,
            channels=config.channels_for_head,
            num_convs=config.head.num_convs,
            use_group_norm=config.head.use_group_norm,
            prior=config.head.prior,
        )
        c = config.coder
        self.box_coder = BoxCoder(weights=c.weights, clamp=c.clamp, symmetric_clamp=c.symmetric_clamp)
        loss = config.loss
        self.normalizer = FocalLossNormalizer(
            momentum=loss.normalizer_momentum, initial=loss.normalizer_initial, distributed=loss.distributed
        )
        t = config.transform
        self.pixel_mean: Tensor
        self.pixel_std: Tensor
        self.register_buffer("pixel_mean", torch.tensor(t.pixel_mean, dtype=torch.float32), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(t.pixel_std, dtype=torch.float32), persistent=False)
        if b.channels_last:
            self.backbone.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
            self.fpn.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    # ------------------------------------------------------------------ input
    def _compute_dtype(self) -> torch.dtype:
        """The parameters' dtype: floating images of any other dtype are cast to it
        (under autocast the parameters stay float32 and autocast casts further)."""
        for p in self.parameters():
            if p.is_floating_point():
                return p.dtype
        return torch.float32

    def _eval_min_size(self) -> int:
        m = self.config.transform.eval_min_size
        assert m is not None  # only called when resizing
        return m

    def _pick_min_size(self) -> int:
        m = self.config.transform.min_size
        if isinstance(m, tuple) and self.training and len(m) > 1:
            return m[int(torch.randint(len(m), ()).item())]
        return self._eval_min_size()

    def _scale(self, height: int, width: int, min_size: int) -> float:
        return min(min_size / min(height, width), self.config.transform.max_size / max(height, width))

    def preprocess(
        self, images: list[Tensor] | Tensor, targets: list[dict[str, Tensor]] | None = None
    ) -> tuple[Tensor, list[tuple[int, int]], list[tuple[int, int]], list[dict[str, Tensor]] | None]:
        """Normalise, resize and pad; scale target boxes likewise.

        Returns:
            ``(batch, image_sizes, original_sizes, targets)``: the padded batch
            ``(B, 3, H_pad, W_pad)``, each image's ``(height, width)`` after
            resizing and before padding, the input sizes, and targets with
            resized boxes (``None`` if none were given).
        """
        cfg = self.config
        mean = self.pixel_mean.view(-1, 1, 1)
        std = self.pixel_std.view(-1, 1, 1)
        if isinstance(images, Tensor):
            original = [(int(images.shape[-2]), int(images.shape[-1]))] * images.shape[0]
            x = (images - mean.to(images.dtype)) / std.to(images.dtype)
            h, w = original[0]
            scale = None if cfg.transform.min_size is None else self._scale(h, w, self._pick_min_size())
            # Bilinear resampling by exactly 1 is the identity: skip the copy.
            if scale is not None and scale != 1.0:
                x = F.interpolate(
                    x,
                    scale_factor=scale,
                    mode="bilinear",
                    recompute_scale_factor=True,
                    align_corners=False,
                )
            resized = [x]
            sizes = [(int(x.shape[-2]), int(x.shape[-1]))] * x.shape[0]
        else:
            original = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
            resized = []
            for img in images:
                y = (img - mean.to(img.dtype)) / std.to(img.dtype)
                h, w = int(img.shape[-2]), int(img.shape[-1])
                scale = None if cfg.transform.min_size is None else self._scale(h, w, self._pick_min_size())
                if scale is not None and scale != 1.0:
                    y = F.interpolate(
                        y[None],
                        scale_factor=scale,
                        mode="bilinear",
                        recompute_scale_factor=True,
                        align_corners=False,
                    )[0]
                resized.append(y)
            sizes = [(int(y.shape[-2]), int(y.shape[-1])) for y in resized]

        d = cfg.transform.size_divisible
        max_h = max(s[0] for s in sizes)
        max_w = max(s[1] for s in sizes)
        pad_h = int(math.ceil(max_h / d) * d)
        pad_w = int(math.ceil(max_w / d) * d)
        if isinstance(images, Tensor):
            x = resized[0]
            batch = (
                x
                if (pad_h, pad_w) == tuple(x.shape[-2:])
                else F.pad(x, (0, pad_w - x.shape[-1], 0, pad_h - x.shape[-2]))
            )
        else:
            first = resized[0]
            batch = first.new_zeros((len(resized), 3, pad_h, pad_w))
            for i, y in enumerate(resized):
                batch[i, :, : y.shape[-2], : y.shape[-1]].copy_(y)
        if cfg.backbone.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)

        if targets is not None:
            new_targets = []
            for t, (h0, w0), (h1, w1) in zip(targets, original, sizes):
                t = dict(t)
                if (h0, w0) != (h1, w1):
                    t["boxes"] = t["boxes"] * self._ratios(t["boxes"], (h0, w0), (h1, w1))
                new_targets.append(t)
            targets = new_targets
        return batch, sizes, original, targets

    @staticmethod
    def _ratios(boxes: Tensor, src: tuple[int, int], dst: tuple[int, int]) -> Tensor:
        """``(4,)`` factors ``(rw, rh, rw, rh)`` mapping ``src`` pixels to ``dst`` pixels,
        each a float32 quotient (as torchvision's ``resize_boxes``)."""
        size = torch.tensor([dst[1], dst[0]], dtype=torch.float32, device=boxes.device)
        size0 = torch.tensor([src[1], src[0]], dtype=torch.float32, device=boxes.device)
        return (size / size0).repeat(2).to(boxes.dtype)

    # ------------------------------------------------------------------ network
    def dense(self, batch: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """Backbone, FPN and heads on a pre-processed batch ``(B, 3, H, W)``.

        Returns per-level class logits ``(B, H_l·W_l·A, K)`` and box deltas
        ``(B, H_l·W_l·A, 4)`` for P3 … P7. Static shapes: compiles with
        ``fullgraph=True`` and exports with :func:`torch.export.export`.
        """
        features = self.fpn(self.backbone(batch))
        if self.config.backbone.channels_last:
            features = [f.contiguous() for f in features]
        return self.head.forward_levels(features)

    def forward(
        self,
        images: list[Tensor] | Tensor,
        targets: list[dict[str, Tensor]] | None = None,
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        """Losses in training mode, detections in evaluation mode (see the class).

        Shape:
            images: ``B`` tensors ``(3, H_i, W_i)``, or ``(B, 3, H, W)``.
            output: training: a dict of scalar losses; evaluation: ``B`` dicts with
                ``boxes`` ``(D_i, 4)``, ``scores`` and ``labels`` ``(D_i,)``.
        """
        images = check_images(images, self._compute_dtype())
        num_images = images.shape[0] if isinstance(images, Tensor) else len(images)
        if self.training:
            if targets is None:
                raise ValueError("RetinaNet: targets must be given in training mode, got None")
            targets = check_targets(targets, num_images, self.config.num_classes)
        batch, sizes, original, targets = self.preprocess(images, targets if self.training else None)
        cls_levels, box_levels = self.dense(batch)
        padded = (int(batch.shape[-2]), int(batch.shape[-1]))
        feature_sizes = self.anchor_generator.feature_sizes_for(padded)  # = the FPN's P3-P7 maps
        if self.training:
            assert targets is not None
            return self.compute_loss(
                torch.cat(cls_levels, dim=1),
                torch.cat(box_levels, dim=1),
                targets,
                feature_sizes,
                image_size=padded,
            )
        return self.postprocess(cls_levels, box_levels, feature_sizes, sizes, original, padded_size=padded)

    def _check_padded_size(self, fn: str, name: str, value: object) -> None:
        if value is None and self.anchor_generator.derive_strides:
            raise ValueError(
                f"{fn}: {name} (the padded batch's (H, W)) must be given when the anchor "
                "strides are derived (anchors.derive_strides=True), got None"
            )

    # ------------------------------------------------------------------ loss
    def compute_loss(
        self,
        cls_logits: Tensor,
        box_deltas: Tensor,
        targets: list[dict[str, Tensor]],
        feature_sizes: Sequence[tuple[int, int]],
        *,
        image_size: tuple[int, int] | None = None,
    ) -> dict[str, Tensor]:
        r"""Focal loss and box loss for a batch.

        Args:
            cls_logits: ``(B, N, K)`` logits, levels concatenated.
            box_deltas: ``(B, N, 4)`` predicted codes.
            targets: Per image ``"boxes"`` ``(M_i, 4)`` in the padded batch's
                pixels, ``"labels"`` ``(M_i,)``, optional ``"iscrowd"``.
            feature_sizes: ``(H_l, W_l)`` of P3 … P7.
            image_size: ``(H_pad, W_pad)`` of the padded batch; required when the
                anchor strides are derived (``anchors.derive_strides``).

        Returns:
            ``{"classification": scalar, "bbox_regression": scalar}``.

        Raises:
            ValueError: ``image_size`` missing with derived anchor strides.
        """
        cfg = self.config
        device = cls_logits.device
        self._check_padded_size("RetinaNet.compute_loss", "image_size", image_size)
        grid = self.anchor_generator(feature_sizes, device=device, dtype=torch.float32, image_size=image_size)
        anchors = grid.boxes
        gt_boxes, gt_labels, crowd_boxes = self._split_targets(targets, device)
        assignment = assign_anchors(
            grid,
            gt_boxes,
            gt_labels,
            high_threshold=cfg.matcher.high_threshold,
            low_threshold=cfg.matcher.low_threshold,
            allow_low_quality_matches=cfg.matcher.allow_low_quality_matches,
            low_quality=cfg.matcher.low_quality,
            min_low_quality_iou=cfg.matcher.min_low_quality_iou,
            crowd_ioa_threshold=cfg.matcher.crowd_ioa_threshold,
            box_coder=self.box_coder,
            crowd_boxes=crowd_boxes,
        )
        labels, fg = assignment.labels, assignment.foreground
        b, n = labels.shape

        if cfg.loss.normalization == "batch":
            norm = self.normalizer(fg.sum())
            cls_weights = None
            box_weights = None
        else:
            per_image = fg.sum(dim=1).clamp(min=1).to(torch.float32) * b
            norm = torch.ones((), device=device)
            cls_weights = (1.0 / per_image)[:, None].expand(b, n)
            box_weights = cls_weights[fg]

        loss_cls = self.classification_loss(cls_logits, labels, cls_weights, anchors)

        per_box = self._box_loss(
            box_deltas, fg, assignment.box_targets, assignment.matched_gt, anchors, gt_boxes
        )
        if box_weights is not None:
            per_box = per_box * box_weights
        loss_box = per_box.sum()
        return {"classification": loss_cls / norm, "bbox_regression": loss_box / norm}

    @staticmethod
    def _split_targets(
        targets: list[dict[str, Tensor]], device: torch.device
    ) -> tuple[list[Tensor], list[Tensor], list[Tensor] | None]:
        """Per image: non-crowd boxes (float32) and labels (int64), and the crowd boxes
        (``None`` when no image has any)."""
        gt_boxes, gt_labels, crowd_boxes = [], [], []
        any_crowd = False
        for t in targets:
            boxes = t["boxes"].to(device=device, dtype=torch.float32)
            labels = t["labels"].to(device=device, dtype=torch.int64)
            crowd = t.get("iscrowd")
            if crowd is not None and crowd.numel():
                is_crowd = crowd.to(device).bool()
                any_crowd = any_crowd or bool(is_crowd.any())
                crowd_boxes.append(boxes[is_crowd])
                boxes, labels = boxes[~is_crowd], labels[~is_crowd]
            else:
                crowd_boxes.append(boxes.new_zeros((0, 4)))
            gt_boxes.append(boxes)
            gt_labels.append(labels)
        return gt_boxes, gt_labels, crowd_boxes if any_crowd else None

    def _box_loss(
        self,
        box_deltas: Tensor,
        fg: Tensor,
        box_targets: Tensor,
        matched_gt: Tensor,
        anchors: Tensor,
        gt_boxes: list[Tensor],
    ) -> Tensor:
        """``(F,)`` box loss of each foreground anchor (``config.loss.box_loss``), in float32."""
        cfg = self.config.loss
        b, n = fg.shape
        pred = box_deltas[fg].float()  # box losses in float32 (autocast-safe)
        if cfg.box_loss == "giou":
            device = box_deltas.device
            anchors_fg = anchors.expand(b, n, 4)[fg]
            counts = torch.tensor([g.shape[0] for g in gt_boxes], device=device)
            offsets = torch.cumsum(counts, 0) - counts
            img = torch.arange(b, device=device)[:, None].expand(b, n)[fg]
            flat_gt = torch.cat(gt_boxes, dim=0)
            matched = flat_gt[offsets[img] + matched_gt[fg]] if flat_gt.numel() else flat_gt
            return giou_loss(self.box_coder.decode(pred, anchors_fg), matched)
        target = box_targets[fg].float()
        if cfg.box_loss == "smooth_l1":
            return smooth_l1_loss(pred, target, beta=cfg.smooth_l1_beta).sum(-1)
        return l1_loss(pred, target).sum(-1)

    def classification_loss(
        self, cls_logits: Tensor, labels: Tensor, weights: Tensor | None, anchors: Tensor
    ) -> Tensor:
        r"""Summed (not yet normalised) classification loss of ``config.loss.cls_loss``.

        ``"focal"``: :func:`~focal_detect.losses.sigmoid_focal_loss_from_labels`.
        ``"focal_star"``: :func:`~focal_detect.losses.sigmoid_focal_loss_star` on the
        one-hot targets, ignored anchors left out. ``"ohem"``: the per-anchor focal
        loss (summed over classes, without gradient) ranks the anchors,
        :func:`~focal_detect.sampling.ohem_sample` chooses each image's minibatch and
        the focal loss is summed over the chosen anchors only. A subclass may
        override this hook to try another loss.

        Args:
            cls_logits: ``(B, N, K)`` logits.
            labels: ``(B, N)`` assigned labels (class, ``BACKGROUND`` or ``IGNORE``).
            weights: Optional ``(B, N)`` per-anchor factors (per-image normalisation).
            anchors: ``(N, 4)`` anchors (boxes of OHEM's optional NMS step).

        Returns:
            Scalar: the sum over anchors and classes.
        """
        cfg = self.config
        if cfg.loss.cls_loss == "focal_star":
            k = cls_logits.shape[-1]
            keep = labels != IGNORE
            onehot = labels[..., None] == torch.arange(k, device=labels.device)
            per = sigmoid_focal_loss_star(
                cls_logits,
                onehot.to(cls_logits.dtype),
                gamma=cfg.loss.star_gamma,
                beta=cfg.loss.star_beta,
                alpha=cfg.loss.alpha,
                check_targets=False,  # a one-hot target, in {0, 1} by construction
            ).sum(-1)
            factor = keep.to(per.dtype) if weights is None else keep.to(per.dtype) * weights.to(per.dtype)
            return (per * factor).sum()
        if cfg.loss.cls_loss == "ohem":
            with torch.no_grad():
                scores = sigmoid_focal_loss_from_labels(
                    cls_logits.detach(), labels, alpha=cfg.loss.alpha, gamma=cfg.loss.gamma
                ).sum(-1)
            chosen = ohem_sample(
                scores,
                labels,
                batch_size_per_image=cfg.loss.ohem_batch_size_per_image,
                positive_fraction=cfg.loss.ohem_positive_fraction,
                boxes=None if cfg.loss.ohem_nms_threshold is None else anchors.expand(labels.shape[0], -1, 4),
                nms_threshold=cfg.loss.ohem_nms_threshold,
            )
            weights = chosen.to(torch.float32) if weights is None else weights * chosen
        return sigmoid_focal_loss_from_labels(
            cls_logits,
            labels,
            weights=weights,
            alpha=cfg.loss.alpha,
            gamma=cfg.loss.gamma,
            reduction="sum",
        )

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def postprocess(
        self,
        cls_levels: Sequence[Tensor],
        box_levels: Sequence[Tensor],
        feature_sizes: Sequence[tuple[int, int]],
        image_sizes: Sequence[tuple[int, int]],
        original_sizes: Sequence[tuple[int, int]] | None = None,
        *,
        padded_size: tuple[int, int] | None = None,
    ) -> list[dict[str, Tensor]]:
        r"""Detections from per-level head outputs, vectorised over the batch.

        1. Per level, the (anchor, class) pairs of each image with score
           :math:`\sigma(x) >` ``inference.score_threshold`` and, among them, the
           ``topk_candidates`` best, computed for all images at once: the best
           pairs lie in the ``topk_candidates`` anchors of highest best-class
           logit, so one max over classes, a top-k over anchors and a top-k over
           those anchors' pairs replace a top-k over all ``H·W·A·K`` logits.
           Only the kept logits are turned into scores.
        2. Their deltas decoded with the box coder, boxes clipped to the image.
        3. Class-wise NMS for the whole batch in one
           :func:`~focal_detect.boxes.batched_nms` call (category
           ``image · K + class``), then the ``detections_per_img`` best per image,
           mapped back to ``original_sizes`` (an exact shortcut runs NMS on each
           image's best candidates first, see ``_class_wise_nms``).

        Args:
            cls_levels: Per level ``(B, N_l, K)`` logits.
            box_levels: Per level ``(B, N_l, 4)`` deltas.
            feature_sizes: ``(H_l, W_l)`` per level.
            image_sizes: Per image ``(height, width)`` the boxes are clipped to.
            original_sizes: Per image size to rescale the boxes to (``None``: no
                rescaling).
            padded_size: ``(H_pad, W_pad)`` of the padded batch; required when the
                anchor strides are derived (``anchors.derive_strides``).

        Returns:
            One dict per image with ``"boxes"`` ``(D, 4)``, ``"scores"`` ``(D,)``,
            ``"labels"`` ``(D,)`` int64, sorted by decreasing score.

        Example:
            >>> model = RetinaNet(RetinaNetConfig.preset("tiny", 2, inference={"detections_per_img": 5})).eval()
            >>> with torch.no_grad():
            ...     _ = model.head.cls_logits.bias.fill_(0.0)  # every score ~0.5
            ...     batch, sizes, original, _ = model.preprocess([torch.rand(3, 64, 64)])
            ...     cls, box = model.dense(batch)
            >>> sizes_l = model.anchor_generator.feature_sizes_for((128, 128))
            >>> det = model.postprocess(cls, box, sizes_l, sizes, original)
            >>> det[0]["boxes"].shape, det[0]["labels"].dtype
            (torch.Size([5, 4]), torch.int64)
        """
        b = cls_levels[0].shape[0]
        k = cls_levels[0].shape[-1]
        device = cls_levels[0].device
        self._check_padded_size("RetinaNet.postprocess", "padded_size", padded_size)
        anchor_levels = self.anchor_generator(
            feature_sizes, device=device, dtype=torch.float32, image_size=padded_size
        ).per_level()
        all_boxes, all_scores, all_labels = [], [], []
        for logits, deltas, anchors in zip(cls_levels, box_levels, anchor_levels):
            level_boxes, level_scores, level_labels = self._level_candidates(logits, deltas, anchors)
            all_boxes.append(level_boxes)
            all_scores.append(level_scores)
            all_labels.append(level_labels)
        boxes = torch.cat(all_boxes, dim=1)  # (B, C, 4)
        scores = torch.cat(all_scores, dim=1)  # (B, C), -1 where empty
        labels = torch.cat(all_labels, dim=1)
        # Clip each image's boxes to its own size (before padding).
        hw = torch.tensor(image_sizes, dtype=boxes.dtype, device=device)  # (B, 2) as (h, w)
        upper = hw.flip(-1).repeat(1, 2)[:, None, :]  # (B, 1, 4) = (w, h, w, h)
        boxes = torch.minimum(boxes.clamp(min=0), upper)
        out_boxes, out_scores, out_labels, img_kept = self._class_wise_nms(boxes, scores, labels, k)
        if original_sizes is not None and list(map(tuple, original_sizes)) != list(map(tuple, image_sizes)):
            # (w0 / w, h0 / h) per image, each a float32 quotient as torchvision's resize_boxes.
            src = torch.tensor(image_sizes, dtype=torch.float32, device=device).flip(-1)
            dst = torch.tensor(original_sizes, dtype=torch.float32, device=device).flip(-1)
            factors = (dst / src).repeat(1, 2).to(out_boxes.dtype)  # (B, 4)
            out_boxes = out_boxes * factors[img_kept]
        out_scores = out_scores.to(cls_levels[0].dtype)
        splits = torch.bincount(img_kept, minlength=b).tolist()
        return [
            {"boxes": bx, "scores": sc, "labels": lb}
            for bx, sc, lb in zip(out_boxes.split(splits), out_scores.split(splits), out_labels.split(splits))
        ]

    def _level_candidates(
        self, logits: Tensor, deltas: Tensor, anchors: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """One level's ``topk_candidates`` best (anchor, class) pairs per image.

        Shape:
            logits: ``(B, N_l, K)``; deltas: ``(B, N_l, 4)``; anchors: ``(N_l, 4)``.
            output: decoded boxes ``(B, T, 4)``, scores ``(B, T)`` (``-1`` below
            ``score_threshold``) and labels ``(B, T)``.
        """
        b, n_anchors, k = logits.shape
        top = self.config.inference.topk_candidates
        if n_anchors > top:
            # The ``top`` best pairs lie in the ``top`` anchors of highest
            # best-class logit: at least ``top`` pairs reach the ``top``-th
            # largest anchor maximum. One pass over the logits instead of a
            # top-k over all H·W·A·K of them.
            cand = logits.amax(dim=-1).topk(top, dim=1, sorted=False).indices  # (B, top)
            sub = torch.gather(logits, 1, cand[..., None].expand(b, top, k))
        else:
            cand = torch.arange(n_anchors, device=logits.device).expand(b, n_anchors)
            sub = logits
        flat = sub.reshape(b, -1).float()
        top_logit, top_idx = flat.topk(min(top, flat.shape[1]), dim=1, sorted=False)
        slot = torch.div(top_idx, k, rounding_mode="floor")
        anchor_idx = torch.gather(cand, 1, slot)
        score = torch.sigmoid(top_logit)
        score = torch.where(score > self.config.inference.score_threshold, score, -1.0)  # -1: below
        d = torch.gather(deltas, 1, anchor_idx[..., None].expand(*anchor_idx.shape, 4))
        return self.box_coder.decode(d.float(), anchors[anchor_idx]), score, top_idx - slot * k

    def _class_wise_nms(
        self, boxes: Tensor, scores: Tensor, labels: Tensor, k: int
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Class-wise NMS for the whole batch, then each image's ``detections_per_img`` best.

        Shape:
            boxes: ``(B, C, 4)``; scores: ``(B, C)`` with ``-1`` for no candidate;
            labels: ``(B, C)``.
            output: ``(D, 4)`` boxes, ``(D,)`` scores, labels and image indices,
            grouped by image, each image's by decreasing score.

        Exact shortcut in step 3: a box is suppressed only by higher-scoring
        boxes, so NMS restricted to each image's ``w`` best candidates keeps
        exactly the full run's survivors among them; when that yields at least
        ``detections_per_img`` survivors per image (or nothing was cut), they
        contain the final detections. ``w`` is tried as 2 and 8 times
        ``detections_per_img``, then all candidates. The result is the same as
        torchvision's per-image, per-level loop.
        """
        b = scores.shape[0]
        device = scores.device
        limit = self.config.inference.detections_per_img
        image_ids = torch.arange(b, device=device)
        n_valid = (scores >= 0).sum(1)
        total = scores.shape[1]
        widths = sorted({min(total, 2 * limit), min(total, 8 * limit), total})
        for width in widths:
            s_top, c_top = scores.topk(width, dim=1)  # sorted: best first
            sel = s_top >= 0
            cand_img = image_ids[:, None].expand(b, width)[sel]
            cand_col = c_top[sel]
            cand_boxes = boxes[cand_img, cand_col]
            cand_scores = s_top[sel]
            cand_labels = labels[cand_img, cand_col]
            kept = batched_nms(
                cand_boxes, cand_scores, cand_img * k + cand_labels, self.config.inference.nms_threshold
            )
            img_kept = cand_img[kept]
            n_kept = torch.bincount(img_kept, minlength=b)
            if width == total or bool(((n_kept >= limit) | (n_valid <= width)).all()):
                break
        # ``kept`` is in decreasing score order; group by image keeping that order.
        order = torch.sort(img_kept, stable=True).indices
        kept, img_kept = kept[order], img_kept[order]
        counts = torch.bincount(img_kept, minlength=b)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(kept.numel(), device=device) - starts[img_kept]
        sel = rank < limit
        kept, img_kept = kept[sel], img_kept[sel]
        return cand_boxes[kept], cand_scores[kept], cand_labels[kept], img_kept
