r"""Export a :class:`~focal_detect.models.RetinaNet`'s whole inference path to ONNX.

:func:`export_onnx` writes one ONNX graph (opset ≥ 17) that takes a batch of images
and returns the final detections, so that a deployment needs only ``onnxruntime``
and ``numpy``:

==========================  ========================================================
step                        in the graph
==========================  ========================================================
normalise                   ``(x - pixel_mean) / pixel_std``
resize (``min_size``)       short side to ``min_size`` unless the long side would
                            exceed ``max_size``; bilinear, torch's arithmetic
pad                         bottom/right to a multiple of ``size_divisible``
dense network               backbone, FPN, heads (:meth:`RetinaNet.dense`)
anchors                     built from the feature sizes inside the graph
per-level top-k             ``topk_candidates`` (anchor, class) pairs per level
threshold, decode, clip     score :math:`> \text{score\_threshold}`, box coder
class-wise NMS              ONNX ``NonMaxSuppression`` (one class per label)
cap                         the ``detections_per_img`` best per image
==========================  ========================================================

Height, width and batch size are dynamic. Inputs and outputs:

* ``images``: ``(B, 3, H, W)`` float32 in ``[0, 1]`` (all images of a batch share
  one size, as a batched tensor does for :class:`RetinaNet`).
* ``boxes``: ``(B, D, 4)`` float32 ``(x1, y1, x2, y2)`` in the input's pixels;
  ``scores``: ``(B, D)`` float32; ``labels``: ``(B, D)`` int64;
  ``num_detections``: ``(B,)`` int64. Image ``b``'s detections are the first
  ``num_detections[b]`` rows, by decreasing score; the rest is padding (boxes and
  scores 0, labels -1). ``D = min(detections_per_img, candidates)``.

The result equals ``model(images)`` in evaluation mode (same detections, boxes
within float32 rounding) up to two freedoms of any greedy NMS: boxes whose scores are
equal to within float32 rounding (onnxruntime's convolutions round differently from
ATen's, by a few 1e-5 in a score) may come in another order, and a pair whose IoU equals the threshold to
within one rounding step, or a score within one step of ``inference.score_threshold``, may be
decided the other way (onnxruntime computes the IoU with its own formula).

The size arithmetic of the resize step runs in float64 in the graph, as Python's
does in eager mode (a float32 computation picks a different output size for about
one in thirty image sizes), and the bilinear interpolation is written out with
torch's source-index arithmetic (onnxruntime's ``Resize`` differs from
``torch.nn.functional.interpolate`` by up to ~1e-4 on ``[0, 1]`` inputs).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

if TYPE_CHECKING:
    from focal_detect.models.retinanet import RetinaNet

__all__ = ["ONNX_INPUT_NAMES", "ONNX_OUTPUT_NAMES", "RetinaNetInference", "export_onnx"]

#: Names of the exported graph's inputs.
ONNX_INPUT_NAMES = ("images",)
#: Names of the exported graph's outputs.
ONNX_OUTPUT_NAMES = ("boxes", "scores", "labels", "num_detections")

# Opset of the exported graph: 17 is the lowest the issue allows, 18 the one the
# dynamo exporter emits natively.
DEFAULT_OPSET = 18
# ``max_output_boxes_per_class`` of ONNX NonMaxSuppression: no limit in practice
# (at most 5 levels x ``topk_candidates`` candidates enter NMS).
_NMS_NO_LIMIT = 1 << 30
# NonMaxSuppression keeps scores strictly above its threshold: candidates below
# ``inference.score_threshold`` (and the other classes' slots) carry the score -1.
_EMPTY_SCORE = -1.0
_NMS_SCORE_THRESHOLD = -0.5

_NMS_OP: Any = None


def _nms_op() -> Any:
    """``torch.ops.focal_detect.onnx_nms``, registered on first use (not at import)."""
    global _NMS_OP
    if _NMS_OP is not None:
        return _NMS_OP
    from focal_detect.boxes import batched_nms

    @torch.library.custom_op("focal_detect::onnx_nms", mutates_args=())
    def onnx_nms(boxes: Tensor, scores: Tensor, iou_threshold: float, score_threshold: float) -> Tensor:
        # Semantics of ONNX NonMaxSuppression: boxes (B, C, 4), scores (B, K, C);
        # per image and class, greedy NMS over the boxes with score > score_threshold.
        # Returns (S, 3) int64 rows (image, class, box), ordered by image, class and
        # decreasing score (onnxruntime's order).
        k = scores.shape[1]
        img, cls, box = (scores > score_threshold).nonzero(as_tuple=True)
        if img.numel() == 0:
            return torch.zeros((0, 3), dtype=torch.int64, device=boxes.device)
        keep = batched_nms(boxes[img, box], scores[img, cls, box], img * k + cls, iou_threshold)
        out = torch.stack((img[keep], cls[keep], box[keep]), dim=1)
        order = torch.sort(out[:, 0] * k + out[:, 1], stable=True).indices
        return out[order]

    @onnx_nms.register_fake
    def _(boxes: Tensor, scores: Tensor, iou_threshold: float, score_threshold: float) -> Tensor:
        n = torch.library.get_ctx().new_dynamic_size()
        return boxes.new_empty((n, 3), dtype=torch.int64)

    _NMS_OP = torch.ops.focal_detect.onnx_nms.default
    return _NMS_OP


def _onnx_nms_translation() -> Any:
    """onnxscript translation of ``focal_detect::onnx_nms`` to ``NonMaxSuppression``."""
    from onnxscript import opset18 as op

    def onnx_nms(boxes: Any, scores: Any, iou_threshold: float, score_threshold: float) -> Any:
        return op.NonMaxSuppression(
            boxes,
            scores,
            op.Constant(value_ints=[_NMS_NO_LIMIT]),  # type: ignore[arg-type]
            op.Constant(value_floats=[iou_threshold]),  # type: ignore[arg-type]
            op.Constant(value_floats=[score_threshold]),  # type: ignore[arg-type]
            center_point_box=0,
        )

    return onnx_nms


def _source_index(in_size: Any, out_size: Any, device: torch.device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Indices and weights of torch's bilinear resampling (``align_corners=False``,
    output size given), in the order of ATen's ``compute_source_index_and_lambda``:
    ``ratio = in / out`` (float32), ``real = max(ratio * (i + 0.5) - 0.5, 0)``,
    ``i0 = min(floor(real), in - 1)``, ``l1 = clamp(real - i0, 0, 1)``."""
    ratio = torch.full((), in_size, dtype=torch.float32, device=device) / out_size
    dst = torch.arange(out_size, device=device).to(torch.float32)
    real = (ratio * (dst + 0.5) - 0.5).clamp(min=0.0)
    i0 = torch.minimum(real.floor().to(torch.int64), torch.full((), in_size - 1, device=device))
    l1 = (real - i0.to(torch.float32)).clamp(0.0, 1.0)
    i1 = torch.where(i0 < in_size - 1, i0 + 1, i0)
    return i0, i1, 1.0 - l1, l1


def _resize_bilinear(x: Tensor, out_h: Any, out_w: Any) -> Tensor:
    """``F.interpolate(x, size=(out_h, out_w), mode="bilinear", align_corners=False)``
    as gathers and weighted sums: ``h0 (w0 x00 + w1 x01) + h1 (w0 x10 + w1 x11)``."""
    h0, h1, a0, a1 = _source_index(x.shape[-2], out_h, x.device)
    w0, w1, b0, b1 = _source_index(x.shape[-1], out_w, x.device)
    rows0, rows1 = x.index_select(-2, h0), x.index_select(-2, h1)
    top = b0 * rows0.index_select(-1, w0) + b1 * rows0.index_select(-1, w1)
    bottom = b0 * rows1.index_select(-1, w0) + b1 * rows1.index_select(-1, w1)
    return a0[:, None] * top + a1[:, None] * bottom


class RetinaNetInference(nn.Module):
    r"""The whole inference path of a :class:`~focal_detect.models.RetinaNet` as one
    traceable module: the graph :func:`export_onnx` writes.

    ``forward(images)`` takes ``(B, 3, H, W)`` float images in ``[0, 1]`` and
    returns ``(boxes (B, D, 4), scores (B, D), labels (B, D), num_detections (B,))``
    (see the module notes); the first ``num_detections[b]`` rows of image ``b``
    equal ``model(images)[b]`` (same count, labels and order up to equal scores).
    It has no data-dependent Python control flow: every image size and every
    number of candidates goes through the same operations.

    Args:
        model: A :class:`~focal_detect.models.RetinaNet` (its parameters are
            shared, not copied).

    Raises:
        TypeError: ``model`` is not a RetinaNet.

    Example:
        >>> from focal_detect.models import RetinaNet, RetinaNetConfig
        >>> model = RetinaNet(RetinaNetConfig.preset("tiny", 2, inference={"detections_per_img": 5})).eval()
        >>> with torch.no_grad():
        ...     _ = model.head.cls_logits.bias.fill_(0.0)  # every score ~0.5
        ...     boxes, scores, labels, num = RetinaNetInference(model)(torch.rand(2, 3, 64, 80))
        >>> boxes.shape, num.tolist()
        (torch.Size([2, 5, 4]), [5, 5])
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        from focal_detect.models.retinanet import RetinaNet

        if not isinstance(model, RetinaNet):
            raise TypeError(f"RetinaNetInference: model must be a RetinaNet, got {type(model).__name__}")
        self.model: RetinaNet = model
        gen = model.anchor_generator
        levels = gen([(1, 1)] * gen.num_levels, image_size=(1, 1) if gen.derive_strides else None).levels
        # Nominal strides, or torchvision's derived ones (padded size // feature size, per
        # axis), computed in the graph from the padded size: ``_derive`` decides.
        self._derive = gen.derive_strides
        self._strides = [(float(lv.stride_h), float(lv.stride_w)) for lv in levels]
        self._shifts = [(float(lv.shift_y), float(lv.shift_x)) for lv in levels]
        # The grid adds ``factor * stride`` to ``x * stride`` (anchors.AnchorGenerator's
        # conventions: mmdetection keeps the offset in the cells, Detectron's cells are
        # centred on (stride - 1) / 2).
        conv = gen.convention
        self._shift_factor = (
            0.0 if conv == "mmdetection" else gen.offset - (0.5 if conv == "detectron" else 0.0)
        )
        for i, lv in enumerate(levels):
            self.register_buffer(f"_cells{i}", lv.cell_anchors.to(torch.float32).clone(), persistent=False)

    def _output_size(self, h: Any, w: Any) -> tuple[Any, Any]:
        """Resized ``(height, width)``: ``floor(side * scale)`` with Python's float64
        ``scale = min(min_size / short, max_size / long)``, as ``RetinaNet.preprocess``."""
        cfg = self.model.config
        if cfg.transform.min_size is None:
            return h, w
        min_size = float(self.model._eval_min_size())
        short, long = torch.sym_min(h, w), torch.sym_max(h, w)
        scale = torch.sym_min(min_size / short, float(cfg.transform.max_size) / long)
        return math.floor(h * scale), math.floor(w * scale)

    def _anchors(self, level: int, h: Any, w: Any, pad_h: Any, pad_w: Any, device: torch.device) -> Tensor:
        """``(H_l·W_l·A, 4)`` anchors of ``level``, computed as ``AnchorGenerator``:
        translations in float64, rounded once to float32, plus the cell anchors. With
        derived strides, ``(pad_h // H_l, pad_w // W_l)`` as torchvision."""
        cells: Tensor = getattr(self, f"_cells{level}")
        xs64 = torch.arange(w, dtype=torch.float64, device=device)
        ys64 = torch.arange(h, dtype=torch.float64, device=device)
        if self._derive:
            # pad_h, pad_w are float64 tensors here (see forward): SymInt arithmetic on
            # them would specialise the exported graph to the example's size.
            fh_t, fw_t = pad_h, pad_w
            for _ in range(level + 3):  # feature size: ceil(size / 2) per stride-2 stage
                fh_t, fw_t = torch.floor((fh_t + 1) / 2), torch.floor((fw_t + 1) / 2)
            sh, sw = torch.floor(pad_h / fh_t), torch.floor(pad_w / fw_t)  # exact in float64
            xs = (xs64 * sw + sw * self._shift_factor).to(torch.float32)
            ys = (ys64 * sh + sh * self._shift_factor).to(torch.float32)
        else:
            (sh_n, sw_n), (shift_y, shift_x) = self._strides[level], self._shifts[level]
            xs = (xs64 * sw_n + shift_x).to(torch.float32)
            ys = (ys64 * sh_n + shift_y).to(torch.float32)
        sx = xs.view(1, -1).expand(h, w)
        sy = ys.view(-1, 1).expand(h, w)
        shifts = torch.stack((sx, sy, sx, sy), dim=-1)
        return (shifts.view(h, w, 1, 4) + cells.view(1, 1, -1, 4)).reshape(-1, 4)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Detections of a batch, see the class docstring."""
        model, cfg = self.model, self.model.config
        b, h0, w0 = images.shape[0], images.shape[-2], images.shape[-1]
        device = images.device
        mean = model.pixel_mean
        std = model.pixel_std
        x = (images - mean.view(-1, 1, 1)) / std.view(-1, 1, 1)
        h, w = self._output_size(h0, w0)
        if cfg.transform.min_size is not None:
            x = _resize_bilinear(x, h, w)
        d = cfg.transform.size_divisible
        pad_h, pad_w = (h + d - 1) // d * d, (w + d - 1) // d * d
        x = F.pad(x, (0, pad_w - w, 0, pad_h - h))
        if cfg.backbone.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        cls_levels, box_levels = model.dense(x)
        # The padded size as float64 tensors (for derived strides; read from the data,
        # not from SymInts, so the graph stays dynamic).
        ones = torch.ones_like(x[0, 0], dtype=torch.float64)
        pad_hw = (ones[:, 0].sum(), ones[0, :].sum())

        k = cfg.num_classes
        top = cfg.inference.topk_candidates
        all_boxes, all_scores, all_labels = [], [], []
        fh, fw = pad_h, pad_w
        for level in range(1, 8):
            fh, fw = (fh + 1) // 2, (fw + 1) // 2
            if level < 3:
                continue
            i = level - 3
            if i >= len(cls_levels):
                break
            logits, deltas = cls_levels[i], box_levels[i]
            anchors = self._anchors(i, fh, fw, pad_hw[0], pad_hw[1], device)
            n_anchors = logits.shape[1]
            # The ``top`` best pairs lie in the ``top`` anchors of highest best-class
            # logit (as RetinaNet.postprocess; with fewer anchors, all of them).
            n_cand = torch.sym_min(top, n_anchors)
            cand = logits.amax(dim=-1).topk(n_cand, dim=1).indices  # (B, n_cand)
            sub = torch.gather(logits, 1, cand[..., None].expand(b, n_cand, k))
            flat = sub.reshape(b, n_cand * k).float()
            top_logit, top_idx = flat.topk(torch.sym_min(top, n_cand * k), dim=1)
            slot = torch.div(top_idx, k, rounding_mode="floor")
            anchor_idx = torch.gather(cand, 1, slot)
            score = torch.sigmoid(top_logit)
            all_scores.append(torch.where(score > cfg.inference.score_threshold, score, _EMPTY_SCORE))
            all_labels.append(top_idx - slot * k)
            dl = torch.gather(deltas, 1, anchor_idx[..., None].expand(b, anchor_idx.shape[1], 4))
            all_boxes.append(model.box_coder.decode(dl.float(), anchors[anchor_idx]))
        boxes = torch.cat(all_boxes, dim=1)  # (B, C, 4)
        scores = torch.cat(all_scores, dim=1)  # (B, C)
        labels = torch.cat(all_labels, dim=1)  # (B, C)
        upper = torch.stack([torch.full((), w, device=device), torch.full((), h, device=device)] * 2).to(
            boxes.dtype
        )
        boxes = torch.minimum(boxes.clamp(min=0), upper)

        return self._nms_and_cap(boxes, scores, labels, (h0, w0), (h, w))

    def _nms_and_cap(
        self,
        boxes: Tensor,
        scores: Tensor,
        labels: Tensor,
        original: tuple[Any, Any],
        resized: tuple[Any, Any],
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Class-wise NMS, the ``detections_per_img`` cap, boxes back to ``original``.

        Shape:
            boxes: ``(B, C, 4)``; scores: ``(B, C)`` (``_EMPTY_SCORE`` for no candidate);
            labels: ``(B, C)``.
            output: as :meth:`forward`.
        """
        cfg = self.model.config
        b, device, k = boxes.shape[0], boxes.device, cfg.num_classes
        (h0, w0), (h, w) = original, resized
        # Class-wise NMS: class k sees only the candidates labelled k.
        classes = torch.arange(k, device=device)
        per_class = torch.where(
            labels[:, None, :] == classes[None, :, None], scores[:, None, :], _EMPTY_SCORE
        )
        selected = _nms_op()(boxes, per_class, float(cfg.inference.nms_threshold), _NMS_SCORE_THRESHOLD)
        kept = torch.full_like(scores, _EMPTY_SCORE)
        kept = kept.index_put((selected[:, 0], selected[:, 2]), scores[selected[:, 0], selected[:, 2]])

        out_scores, idx = kept.topk(torch.sym_min(cfg.inference.detections_per_img, kept.shape[1]), dim=1)
        valid = out_scores >= 0
        out_boxes = torch.gather(boxes, 1, idx[..., None].expand(b, idx.shape[1], 4))
        out_labels = torch.gather(labels, 1, idx)
        # Back to the input size: (w0 / w, h0 / h), float32 quotients as torchvision.
        fx = torch.full((), w0, dtype=torch.float32, device=device) / torch.full(
            (), w, dtype=torch.float32, device=device
        )
        fy = torch.full((), h0, dtype=torch.float32, device=device) / torch.full(
            (), h, dtype=torch.float32, device=device
        )
        out_boxes = out_boxes * torch.stack((fx, fy, fx, fy))
        out_boxes = torch.where(valid[..., None], out_boxes, 0.0)
        out_scores = torch.where(valid, out_scores, 0.0)
        out_labels = torch.where(valid, out_labels, -1)
        return out_boxes, out_scores, out_labels, valid.sum(dim=1)


_SCALAR_OPS = frozenset(
    {"Cast", "Div", "Mul", "Min", "Max", "Add", "Sub", "Squeeze", "Unsqueeze", "Reshape", "Constant"}
)
_SHAPE_PLUMBING = ("Squeeze", "Unsqueeze", "Reshape")


def _scalar_ancestry(
    start: str, producer: dict[str, Any], inits: dict[str, Any]
) -> tuple[list[Any], set[str]] | None:
    """The nodes (consumers first) and initializers that compute ``start`` from ``Shape``
    outputs and constants by scalar arithmetic only; ``None`` if anything else feeds it."""
    order: list[Any] = []
    consts: set[str] = set()
    stack, seen = [start], set()
    while stack:
        name = stack.pop()
        if not name or name in seen:
            continue
        seen.add(name)
        if name in inits:
            consts.add(name)
            continue
        node = producer.get(name)
        if node is None or (node.op_type != "Shape" and node.op_type not in _SCALAR_OPS):
            return None
        if node.op_type == "Shape":
            continue
        order.append(node)
        if node.op_type not in _SHAPE_PLUMBING:
            stack.extend(node.input)
        else:
            stack.append(node.input[0])
    return order, consts


def _float64_copies(
    order: list[Any], consts: set[str], graph: Any, inits: dict[str, Any]
) -> tuple[list[Any], dict[str, str]]:
    """float64 copies of the arithmetic nodes (float32 casts and constants promoted) and
    the renaming of their outputs and of the float32 initializers they read."""
    import onnx
    from onnx import TensorProto, numpy_helper

    rename: dict[str, str] = {}
    copies = []
    for node in reversed(order):  # producers before consumers
        if node.op_type in _SHAPE_PLUMBING:
            continue  # integer shape plumbing before the first Cast: shared as is
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.name = node.name + "_f64"
        del copy.output[:]
        copy.output.extend([o + "_f64" for o in node.output])
        for o in node.output:
            rename[o] = o + "_f64"
        for a in copy.attribute:
            if node.op_type == "Cast" and a.name == "to" and a.i == TensorProto.FLOAT:
                a.i = TensorProto.DOUBLE
            if node.op_type == "Constant" and a.name == "value" and a.t.data_type == TensorProto.FLOAT:
                a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype("float64")))
        copies.append(copy)
    for name in consts:
        t = inits[name]
        if t.data_type == TensorProto.FLOAT and name + "_f64" not in inits:
            t64 = numpy_helper.from_array(numpy_helper.to_array(t).astype("float64"), name + "_f64")
            graph.initializer.append(t64)
            inits[t64.name] = t64
        if t.data_type == TensorProto.FLOAT:
            rename[name] = name + "_f64"
    for copy in copies:
        for i, name in enumerate(copy.input):
            copy.input[i] = rename.get(name, name)
    return copies, rename


def _splice(graph: Any, new_nodes: list[tuple[Any, Any]]) -> None:
    """Insert each copy before its ``Floor``, drop the stale float32 value infos of the
    Floors and duplicated copies (two Floors sharing an ancestor: first one wins)."""
    if new_nodes:
        nodes = list(graph.node)
        for anchor, copy in new_nodes:
            nodes.insert(nodes.index(anchor), copy)
        del graph.node[:]
        graph.node.extend(nodes)
        floors = {n.output[0] for n in graph.node if n.op_type == "Floor"}
        keep = [vi for vi in graph.value_info if vi.name not in floors]
        del graph.value_info[:]
        graph.value_info.extend(keep)
    seen_out: set[str] = set()
    unique = []
    for node in graph.node:
        if node.output and node.output[0] in seen_out:
            continue
        seen_out.update(node.output)
        unique.append(node)
    del graph.node[:]
    graph.node.extend(unique)


def _promote_size_arithmetic(proto: Any) -> int:
    """Run the graph's resize-size arithmetic in float64 (in place); returns the
    number of ``Floor`` nodes rewired.

    The exporter computes symbolic floats (``min_size / short * side``) in float32;
    eager mode computes them in float64, and the two pick different output sizes for
    about one image size in thirty. For each ``Floor`` that is fed only by scalar
    arithmetic on ``Shape`` outputs and constants and whose result is only cast to an
    integer, the arithmetic is copied with float64 ``Cast`` targets and constants,
    and the ``Floor`` reads the copy (the float32 original stays for other users).
    """
    import onnx

    graph = proto.graph
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    inits = {t.name: t for t in graph.initializer}
    new_nodes: list[tuple[Any, Any]] = []  # (node to insert before, copy)
    rewired = 0
    for floor in [n for n in graph.node if n.op_type == "Floor"]:
        if not all(c.op_type == "Cast" for c in consumers.get(floor.output[0], [])):
            continue
        found = _scalar_ancestry(floor.input[0], producer, inits)
        if found is None:
            continue
        copies, rename = _float64_copies(*found, graph, inits)
        floor.input[0] = rename.get(floor.input[0], floor.input[0])
        new_nodes.extend((floor, c) for c in copies)
        rewired += 1
    _splice(graph, new_nodes)
    onnx.checker.check_model(proto)
    return rewired


def _check_export_args(fn: str, model: object, opset_version: object, example_size: object) -> RetinaNet:
    from focal_detect.models.retinanet import RetinaNet

    if not isinstance(model, RetinaNet):
        raise TypeError(f"{fn}: model must be a RetinaNet, got {type(model).__name__}")
    if isinstance(opset_version, bool) or not isinstance(opset_version, int) or opset_version < 17:
        raise ValueError(f"{fn}: opset_version must be an int >= 17, got {opset_version!r}")
    if example_size is not None and (
        not isinstance(example_size, (tuple, list))
        or len(example_size) != 2
        or any(isinstance(s, bool) or not isinstance(s, int) or s < 2 for s in example_size)
    ):
        raise ValueError(f"{fn}: example_size must be a pair of ints >= 2, got {example_size!r}")
    return model


def _trace(fn: str, wrapper: RetinaNetInference, example: Tensor, opset_version: int) -> Any:
    """The ONNX ``ModelProto`` of ``wrapper`` with dynamic batch, height and width."""
    batch, height, width = torch.export.Dim("batch"), torch.export.Dim("height"), torch.export.Dim("width")
    nms = _nms_op()
    with torch.no_grad():
        program = torch.onnx.export(
            wrapper,
            (example,),
            dynamo=True,
            input_names=list(ONNX_INPUT_NAMES),
            output_names=list(ONNX_OUTPUT_NAMES),
            dynamic_shapes={"images": {0: batch, 2: height, 3: width}},
            opset_version=opset_version,
            custom_translation_table={nms: _onnx_nms_translation()},
            verbose=False,
        )
    if program is None:  # pragma: no cover (only without dynamo=True)
        raise RuntimeError(f"{fn}: torch.onnx.export returned no program")
    return program.model_proto


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    opset_version: int = DEFAULT_OPSET,
    example_size: tuple[int, int] | None = None,
    metadata: Mapping[str, str] | None = None,
) -> str:
    r"""Write ``model``'s whole inference path as one ONNX graph.

    The graph (see the module notes) maps ``images`` ``(B, 3, H, W)`` float32 in
    ``[0, 1]`` to ``boxes`` ``(B, D, 4)``, ``scores`` ``(B, D)``, ``labels``
    ``(B, D)`` int64 and ``num_detections`` ``(B,)`` int64, with dynamic ``B``,
    ``H`` and ``W``; onnxruntime on the CPU runs it. Uses ``torch.onnx.export``
    with the dynamo exporter (needs ``onnx`` and ``onnxscript``: the ``export``
    extra). The model is exported in float32 on the CPU; ``model`` itself is not
    changed.

    Args:
        model: A :class:`~focal_detect.models.RetinaNet`.
        path: Output ``.onnx`` file.
        opset_version: ONNX opset, ``>= 17`` (default 18).
        example_size: ``(H, W)`` of the example batch used for tracing (default:
            two size-divisible multiples that need padding); any size works at
            run time.
        metadata: Strings stored in the model's ``metadata_props`` (the CLI
            stores ``class_names`` and ``category_ids`` as JSON), read back with
            ``onnxruntime.InferenceSession(path).get_modelmeta().custom_metadata_map``.

    Returns:
        ``path`` as a string.

    Raises:
        TypeError: ``model`` is not a RetinaNet.
        ValueError: ``opset_version < 17`` or a bad ``example_size``.
        ImportError: ``onnx`` or ``onnxscript`` is missing.

    Example:
        The export takes a minute or more on a CPU, so it is not run as a doctest:

        >>> import tempfile, os, numpy as np
        >>> from focal_detect.models import RetinaNet, RetinaNetConfig
        >>> model = RetinaNet(RetinaNetConfig.preset("tiny", 2)).eval()
        >>> path = export_onnx(model, os.path.join(tempfile.mkdtemp(), "m.onnx"))  # doctest: +SKIP
        >>> import onnxruntime  # doctest: +SKIP
        >>> sess = onnxruntime.InferenceSession(path)  # doctest: +SKIP
        >>> out = sess.run(None, {"images": np.zeros((1, 3, 96, 64), np.float32)})  # doctest: +SKIP
        >>> dict(zip(ONNX_OUTPUT_NAMES, (o.shape for o in out)))  # doctest: +SKIP
        {'boxes': (1, 100, 4), 'scores': (1, 100), 'labels': (1, 100), 'num_detections': (1,)}
        >>> ONNX_OUTPUT_NAMES
        ('boxes', 'scores', 'labels', 'num_detections')
    """
    fn = "export_onnx"
    model = _check_export_args(fn, model, opset_version, example_size)
    try:
        import onnx
        import onnxscript  # noqa: F401  (the dynamo exporter needs it)
    except ImportError as e:
        raise ImportError(
            f"{fn}: needs onnx and onnxscript (pip install 'focal-detect[export]'): {e}"
        ) from None

    import copy

    wrapper = RetinaNetInference(copy.deepcopy(model).float().cpu().eval()).eval()
    d = model.config.transform.size_divisible
    if example_size is None:
        example_size = (d + d // 2 + 3, 2 * d + 5)
    example = torch.rand(2, 3, *example_size)
    proto = _trace(fn, wrapper, example, opset_version)
    if model.config.transform.min_size is not None and _promote_size_arithmetic(proto) != 2:
        raise RuntimeError(f"{fn}: internal error: the resize-size arithmetic was not found in the graph")
    for key, value in (metadata or {}).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = str(key), str(value)
    path = os.fspath(path)
    onnx.save(proto, path)
    return path
