"""RetinaNet model: backbone, FPN, head, losses, inference, torchvision interop.

Everything runs a tiny configuration (ResNet-18 of width 8, 32 channels, images of
at most 128 px) so the file stays fast on one CPU core.
"""

from __future__ import annotations

import ast
import importlib
import math
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from focal_detect.boxes import batched_nms
from focal_detect.models import (
    FPN,
    PRESETS,
    FrozenBatchNorm2d,
    LossConfig,
    MatcherConfig,
    ResNet,
    RetinaNet,
    RetinaNetConfig,
    RetinaNetHead,
    TransformConfig,
    load_resnet_state_dict,
    load_torchvision_retinanet,
)

# Loss values are read with float() in assertions; the warning about reading a
# tensor that requires grad is expected there.
pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")

MODELS_DIR = Path(__file__).resolve().parents[1] / "src" / "focal_detect" / "models"
GOLDEN = Path(__file__).resolve().parent / "data" / "retinanet_tv_golden.pt"


def tiny(**changes: object) -> RetinaNet:
    """The ``tiny`` preset with 3 classes; ``changes`` as ``RetinaNetConfig.replace``
    (``loss={"box_loss": "l1"}``)."""
    torch.manual_seed(0)
    return RetinaNet(RetinaNetConfig.preset("tiny", 3, **changes))


def raise_scores(model: RetinaNet, bias: float = -2.0, std: float = 0.3) -> None:
    """Random weights give scores ~0.01: spread the classifier so many pass 0.05."""
    with torch.no_grad():
        model.head.cls_logits.weight.normal_(0.0, std)
        model.head.cls_logits.bias.fill_(bias)


def fixed_batch() -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    g = torch.Generator().manual_seed(3)
    images = [torch.rand(3, 96, 128, generator=g), torch.rand(3, 80, 100, generator=g)]
    targets = [
        {
            "boxes": torch.tensor([[10.0, 12.0, 60.0, 70.0], [64.0, 8.0, 120.0, 40.0]]),
            "labels": torch.tensor([0, 2]),
        },
        {"boxes": torch.tensor([[20.0, 20.0, 52.0, 60.0]]), "labels": torch.tensor([1])},
    ]
    return images, targets


# --------------------------------------------------------------------------- imports
def _public_names(module_name: str) -> set[str]:
    mod = importlib.import_module(module_name)
    return set(getattr(mod, "__all__", ()))


def test_model_modules_import_only_public_focal_detect_names() -> None:
    files = sorted(MODELS_DIR.glob("*.py"))
    assert {f.name for f in files} >= {"retinanet.py", "backbone.py", "fpn.py", "convert.py"}
    used: set[str] = set()
    for path in files:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    assert not alias.name.startswith("torchvision"), f"{path.name} imports torchvision"
                    if alias.name.startswith("focal_detect"):
                        pytest.fail(f"{path.name}: use 'from focal_detect.x import name', got {alias.name}")
            elif isinstance(node, ast.ImportFrom):
                mod = node.module or ""
                assert node.level == 0, f"{path.name}: relative import"
                assert not mod.startswith("torchvision"), f"{path.name} imports torchvision"
                if not mod.startswith("focal_detect"):
                    continue
                parts = mod.split(".")
                assert not any(p.startswith("_") for p in parts), f"{path.name} imports private module {mod}"
                public = _public_names(mod)
                for alias in node.names:
                    assert alias.name in public, f"{path.name}: {mod}.{alias.name} is not in its __all__"
                    used.add(f"{parts[1]}.{alias.name}")
    # The model is assembled from the library's own pieces, not re-implementations.
    for name in (
        "anchors.AnchorGenerator",
        "matching.assign_anchors",
        "coding.BoxCoder",
        "losses.sigmoid_focal_loss_from_labels",
        "losses.FocalLossNormalizer",
        "init.init_prior_bias_",
        "init.init_conv_",
        "boxes.batched_nms",
    ):
        assert name in used, f"the model does not use focal_detect.{name}"


# --------------------------------------------------------------------------- backbone
# Parameter counts of torchvision's resnet18/34/50/101 (weights=None) without fc.
TV_PARAMS_NO_FC = {18: 11_689_512 - 513_000, 50: 25_557_032 - 2_049_000}


@pytest.mark.parametrize("depth", [18, 50])
def test_resnet_matches_torchvision_names_shapes_and_counts(depth: int) -> None:
    net = ResNet(depth, frozen_bn=False)
    sd = net.state_dict()
    assert sum(p.numel() for p in net.parameters()) == TV_PARAMS_NO_FC[depth]
    if depth == 50:
        assert sd["layer1.0.downsample.0.weight"].shape == (256, 64, 1, 1)
        assert sd["layer4.2.conv3.weight"].shape == (2048, 512, 1, 1)
        assert sd["layer2.0.conv2.weight"].shape == (128, 128, 3, 3)  # stride on the 3x3
        assert net.layer2[0].conv2.stride == (2, 2) and net.layer2[0].conv1.stride == (1, 1)
        assert net.out_channels == (512, 1024, 2048)
    else:
        assert "layer1.0.downsample.0.weight" not in sd
        assert sd["layer2.0.downsample.1.running_var"].shape == (128,)
        assert net.out_channels == (128, 256, 512)
    assert "fc.weight" not in sd
    full = ResNet(depth, frozen_bn=False, include_fc=True).state_dict()
    assert full["fc.weight"].shape == (1000, net.out_channels[-1])


def test_resnet_state_dict_equals_torchvision_live() -> None:
    tvm = pytest.importorskip("torchvision.models")
    ref = tvm.resnet34()
    ours = ResNet(34, frozen_bn=False, include_fc=True)
    assert {k: v.shape for k, v in ref.state_dict().items()} == {
        k: v.shape for k, v in ours.state_dict().items()
    }
    ours = ResNet(34)  # frozen BN, no fc: the loader drops what does not apply
    load_resnet_state_dict(ours, ref.state_dict())
    x = torch.randn(1, 3, 64, 64)
    ref.eval()
    want = ref.layer4(ref.layer3(ref.layer2(ref.layer1(ref.maxpool(ref.relu(ref.bn1(ref.conv1(x))))))))
    torch.testing.assert_close(ours(x)[-1], want)


def test_resnet_width_and_strides() -> None:
    net = ResNet(50, width=8)
    c3, c4, c5 = net(torch.zeros(2, 3, 96, 64))
    assert net.out_channels == (64, 128, 256)
    assert c3.shape == (2, 64, 12, 8) and c4.shape == (2, 128, 6, 4) and c5.shape == (2, 256, 3, 2)


def test_frozen_batch_norm_equals_eval_batch_norm_and_loads_its_state() -> None:
    bn = nn.BatchNorm2d(4)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2.0)
        bn.bias.normal_()
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.2, 3.0)
    bn.eval()
    frozen = FrozenBatchNorm2d(4)
    frozen.load_state_dict(bn.state_dict())  # num_batches_tracked is dropped
    x = torch.randn(2, 4, 5, 5)
    torch.testing.assert_close(frozen(x), bn(x))
    frozen.train()
    torch.testing.assert_close(frozen(x), bn(x))  # no batch statistics in training
    assert sorted(n for n, _ in frozen.named_buffers()) == ["bias", "running_mean", "running_var", "weight"]
    assert not list(frozen.parameters())


@pytest.mark.parametrize(
    ("layers", "trainable", "frozen"),
    [
        (0, set(), {"conv1", "layer1", "layer2", "layer3", "layer4"}),
        (3, {"layer2", "layer3", "layer4"}, {"conv1", "layer1"}),
        (5, {"conv1", "bn1", "layer1", "layer4"}, set()),
    ],
)
def test_trainable_layers_freeze_early_stages(layers: int, trainable: set, frozen: set) -> None:
    net = ResNet(18, width=8, frozen_bn=False, trainable_layers=layers)
    status = {}
    for name, p in net.named_parameters():
        status.setdefault(name.split(".")[0], set()).add(p.requires_grad)
    for stage in trainable:
        assert status[stage] == {True}, stage
    for stage in frozen:
        assert status[stage] == {False}, stage
    if layers < 5:
        assert status["bn1"] == {False}


def test_resnet_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="depth"):
        ResNet(42)
    with pytest.raises(ValueError, match="trainable_layers"):
        ResNet(18, trainable_layers=6)
    with pytest.raises(ValueError, match="width"):
        ResNet(18, width=0)


# --------------------------------------------------------------------------- FPN
@pytest.mark.parametrize("p6_from", ["c5", "p5"])
def test_fpn_levels_and_p6_source(p6_from: str) -> None:
    fpn = FPN((8, 16, 32), out_channels=4, p6_from=p6_from)
    c = [torch.randn(1, 8, 16, 12), torch.randn(1, 16, 8, 6), torch.randn(1, 32, 4, 3)]
    p3, p4, p5, p6, p7 = fpn(c)
    assert [tuple(p.shape) for p in (p3, p4, p5, p6, p7)] == [
        (1, 4, 16, 12),
        (1, 4, 8, 6),
        (1, 4, 4, 3),
        (1, 4, 2, 2),
        (1, 4, 1, 1),
    ]
    src = c[2] if p6_from == "c5" else p5
    torch.testing.assert_close(p6, fpn.p6(src))
    torch.testing.assert_close(p7, fpn.p7(torch.relu(p6)))
    # Top-down: P4 sees C5 through nearest up-sampling of the lateral.
    t5 = fpn.lateral[2](c[2])
    t4 = fpn.lateral[1](c[1]) + t5.repeat_interleave(2, -2).repeat_interleave(2, -1)
    torch.testing.assert_close(p4, fpn.output[1](t4))


# --------------------------------------------------------------------------- head
def test_head_output_order_matches_anchor_order() -> None:
    b, a, k, h, w = 2, 3, 4, 2, 5
    raw = torch.arange(b * a * k * h * w, dtype=torch.float32).view(b, a * k, h, w)
    flat = RetinaNetHead._flatten(raw, k)
    assert flat.shape == (b, h * w * a, k)
    for bi, y, x, ai, ki in [(0, 0, 0, 0, 0), (1, 1, 3, 2, 1), (0, 1, 4, 1, 3), (1, 0, 2, 2, 0)]:
        assert flat[bi, (y * w + x) * a + ai, ki] == raw[bi, ai * k + ki, y, x]


def test_head_init_and_shared_weights() -> None:
    torch.manual_seed(0)
    head = RetinaNetHead(num_classes=5, num_anchors=9, in_channels=16, channels=24, num_convs=4)
    convs = [m for m in head.cls_subnet if isinstance(m, nn.Conv2d)]
    assert len(convs) == 4 and convs[0].in_channels == 16 and convs[-1].out_channels == 24
    assert sum(isinstance(m, nn.ReLU) for m in head.box_subnet) == 4
    assert head.cls_logits.out_channels == 45 and head.bbox_pred.out_channels == 36
    torch.testing.assert_close(head.cls_logits.bias, torch.full((45,), -math.log(99.0)))
    assert torch.all(head.bbox_pred.bias == 0) and torch.all(convs[0].bias == 0)
    assert abs(float(convs[1].weight.detach().std()) - 0.01) < 0.001
    cls, box = head([torch.randn(1, 16, 4, 4), torch.randn(1, 16, 2, 2)])
    assert cls.shape == (1, (16 + 4) * 9, 5) and box.shape == (1, 180, 4)
    # Initial scores are the prior pi = 0.01.
    assert abs(float(torch.sigmoid(cls.detach()).mean()) - 0.01) < 1e-3
    gn = RetinaNetHead(num_classes=2, num_anchors=9, in_channels=32, use_group_norm=True)
    assert sum(isinstance(m, nn.GroupNorm) for m in gn.cls_subnet) == 4


# --------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"num_classes": 0}, "RetinaNetConfig: num_classes must be a positive int"),
        ({"backbone": {"depth": 152}}, r"RetinaNetConfig.backbone: depth must be one of \[18, 34, 50, 101\]"),
        ({"backbone": {"trainable_layers": 6}}, "RetinaNetConfig.backbone: trainable_layers must be an int"),
        ({"fpn": {"p6_from": "p4"}}, "RetinaNetConfig.fpn: p6_from must be one of"),
        ({"head": {"prior": 1.0}}, "RetinaNetConfig.head: prior must be a number in"),
        (
            {"head": {"use_group_norm": True, "channels": 40}},
            "RetinaNetConfig.head: channels must be a multiple of 32",
        ),
        ({"loss": {"box_loss": "l2"}}, "RetinaNetConfig.loss: box_loss must be one of"),
        ({"loss": {"normalization": "anchors"}}, "RetinaNetConfig.loss: normalization must be one of"),
        ({"loss": {"gamma": -1.0}}, "RetinaNetConfig.loss: gamma must be a number in"),
        (
            {"loss": {"normalizer_initial": 0.0}},
            "RetinaNetConfig.loss: normalizer_initial must be a number in",
        ),
        (
            {"matcher": {"low_threshold": 0.6}},
            r"RetinaNetConfig.matcher: low_threshold must be <= high_threshold \(0.5\)",
        ),
        ({"matcher": {"high_threshold": 1.5}}, "RetinaNetConfig.matcher: high_threshold must be a number in"),
        (
            {"coder": {"weights": (1.0, 1.0, 1.0)}},
            "RetinaNetConfig.coder: weights must be 4 positive numbers",
        ),
        ({"coder": {"clamp": -1.0}}, "RetinaNetConfig.coder: clamp must be a number in"),
        (
            {"inference": {"score_threshold": 1.5}},
            "RetinaNetConfig.inference: score_threshold must be a number in",
        ),
        (
            {"transform": {"size_divisible": 0}},
            "RetinaNetConfig.transform: size_divisible must be a positive int",
        ),
        (
            {"transform": {"pixel_std": (1.0, 0.0, 1.0)}},
            "RetinaNetConfig.transform: pixel_std must be positive",
        ),
        ({"anchors": {"convention": "yolo"}}, "RetinaNetConfig.anchors: convention must be one of"),
    ],
)
def test_config_rejects_bad_values_naming_the_dotted_field(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RetinaNetConfig().replace(**changes)


def test_config_rejects_unknown_groups_and_fields_pointing_0_1_0_names_to_their_place() -> None:
    with pytest.raises(
        ValueError,
        match=r"RetinaNetConfig.matcher: unknown field\(s\) \['fg_iou_thresh'\] "
        r"\('fg_iou_thresh' is 0.1.0's name of 'matcher.high_threshold'\)",
    ):
        RetinaNetConfig().replace(matcher={"fg_iou_thresh": 0.6})
    with pytest.raises(
        ValueError, match=r"RetinaNetConfig: unknown field\(s\) \['score_thresh'\].*inference"
    ):
        RetinaNetConfig().replace(score_thresh=0.1)
    with pytest.raises(TypeError, match="RetinaNetConfig: matcher must be a MatcherConfig, got dict"):
        RetinaNetConfig(matcher={"high_threshold": 0.6})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="RetinaNetConfig: loss must be a LossConfig or a mapping, got int"):
        RetinaNetConfig().replace(loss=3)


def test_config_is_frozen_and_has_paper_defaults() -> None:
    cfg = RetinaNetConfig()
    m, loss, inf = cfg.matcher, cfg.loss, cfg.inference
    assert (m.high_threshold, m.low_threshold, loss.alpha, loss.gamma) == (0.5, 0.4, 0.25, 2.0)
    assert (loss.smooth_l1_beta, inf.topk_candidates, inf.nms_threshold, inf.detections_per_img) == (
        0.11,
        1000,
        0.5,
        100,
    )
    assert (cfg.fpn.channels, cfg.head.num_convs, cfg.transform.size_divisible, cfg.fpn.p6_from) == (
        256,
        4,
        128,
        "c5",
    )
    assert (cfg.backbone.depth, cfg.anchors.convention, inf.score_threshold) == (50, "paper", 0.05)
    with pytest.raises(AttributeError):
        cfg.num_classes = 3  # type: ignore[misc]
    with pytest.raises(AttributeError):
        cfg.matcher.high_threshold = 0.6  # type: ignore[misc]


def test_replace_merges_a_mapping_into_its_group_and_keeps_the_rest() -> None:
    base = RetinaNetConfig.preset("tiny", 3)
    cfg = base.replace(matcher={"high_threshold": 0.6}, loss=LossConfig(gamma=0.0))
    assert cfg.matcher.high_threshold == 0.6 and cfg.matcher.low_threshold == 0.4
    assert cfg.loss == LossConfig(gamma=0.0)  # a whole group replaces the group
    assert cfg.backbone == base.backbone and cfg.num_classes == 3
    assert RetinaNetConfig.from_dict(cfg.to_dict()) == cfg
    # Lists (TOML / JSON) become tuples: the same config however it was written.
    listed = base.replace(
        anchors={"strides": [8, 16, 32, 64, [128, 128]]}, transform={"min_size": [600, 800]}
    )
    assert listed.anchors.strides == (8, 16, 32, 64, (128, 128)) and listed.transform.min_size == (600, 800)
    assert hash(listed) == hash(
        base.replace(anchors={"strides": (8, 16, 32, 64, (128, 128))}, transform={"min_size": (600, 800)})
    )


def test_presets_registry_lists_the_four_presets_with_their_settings() -> None:
    assert list(PRESETS) == ["paper", "torchvision_v1", "demo", "tiny"]
    assert {n: p.num_classes for n, p in PRESETS.items()} == {
        "paper": 80,
        "torchvision_v1": 91,
        "demo": 5,
        "tiny": 3,
    }
    assert RetinaNetConfig.preset("paper") == RetinaNetConfig()
    tv = RetinaNetConfig.preset("torchvision_v1")
    assert (tv.anchors.convention, tv.anchors.derive_strides, tv.matcher.min_low_quality_iou) == (
        "torchvision",
        True,
        None,
    )
    assert (tv.fpn.p6_from, tv.loss.box_loss, tv.loss.normalization, tv.transform.size_divisible) == (
        "p5",
        "l1",
        "image",
        32,
    )
    assert tv.inference.detections_per_img == 300
    demo = RetinaNetConfig.preset("demo", 5)
    assert (demo.backbone.depth, demo.backbone.width, demo.backbone.frozen_bn, demo.channels_for_head) == (
        18,
        16,
        False,
        64,
    )
    assert demo.anchors.sizes == (12.0, 24.0, 48.0, 96.0, 192.0) and demo.loss.box_loss == "giou"
    tiny_cfg = RetinaNetConfig.preset("tiny", 4, transform={"size_divisible": 32})
    assert (tiny_cfg.num_classes, tiny_cfg.backbone.width, tiny_cfg.fpn.channels) == (4, 8, 32)
    assert tiny_cfg.transform == TransformConfig(min_size=None, size_divisible=32)
    with pytest.raises(
        ValueError, match=r"preset: name must be one of \['paper', 'torchvision_v1', 'demo', 'tiny'\]"
    ):
        RetinaNetConfig.preset("huge")


def test_deprecated_tiny_and_torchvision_v1_map_flat_names() -> None:
    with pytest.warns(DeprecationWarning, match=r"RetinaNetConfig.preset\('tiny'"):
        old = RetinaNetConfig.tiny(num_classes=2, fg_iou_thresh=0.6, size_divisible=32)
    assert old == RetinaNetConfig.preset(
        "tiny", 2, matcher={"high_threshold": 0.6}, transform={"size_divisible": 32}
    )
    with pytest.warns(DeprecationWarning, match="torchvision_v1"):
        tv = RetinaNetConfig.torchvision_v1(frozen_bn=False)
    assert tv == RetinaNetConfig.preset("torchvision_v1", backbone={"frozen_bn": False})


def test_every_config_field_reaches_the_built_model() -> None:
    # One non-default value per field of the groups that build modules; each must show
    # up in the module it configures (a field the model ignored would fail here).
    cfg = RetinaNetConfig.preset(
        "tiny",
        4,
        backbone={"depth": 34, "width": 8, "frozen_bn": False, "trainable_layers": 2, "channels_last": True},
        fpn={"channels": 64, "p6_from": "p5"},
        head={"num_convs": 3, "channels": 32, "use_group_norm": True, "prior": 0.05},
        anchors={
            "convention": "detectron2",
            "sizes": (16, 32, 64, 128, 256),
            "scales": (1.0, 2.0),
            "ratios": (1.0,),
            "strides": (8, 16, 32, 64, (128, 128)),
            "offset": 0.25,
            "order": "ratio-major",
            "derive_strides": True,
        },
        coder={"weights": (10.0, 10.0, 5.0, 5.0), "clamp": 3.0, "symmetric_clamp": True},
        loss={"normalizer_momentum": 0.9, "normalizer_initial": 7.0, "distributed": False},
        transform={"pixel_mean": (0.1, 0.2, 0.3), "pixel_std": (0.5, 0.6, 0.7)},
    )
    model = RetinaNet(cfg)
    assert len(model.backbone.layer1) == 3  # ResNet-34
    assert model.backbone.conv1.out_channels == 8
    assert isinstance(model.backbone.bn1, nn.BatchNorm2d)  # not frozen
    assert not any(p.requires_grad for p in model.backbone.layer2.parameters())  # 2 trainable: layer3, 4
    assert all(p.requires_grad for p in model.backbone.layer3.parameters())
    assert model.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert model.fpn.out_channels == 64 and model.fpn.p6_from == "p5"
    convs = [m for m in model.head.cls_subnet if isinstance(m, nn.Conv2d)]
    assert len(convs) == 3 and convs[-1].out_channels == 32
    assert sum(isinstance(m, nn.GroupNorm) for m in model.head.box_subnet) == 3
    torch.testing.assert_close(model.head.cls_logits.bias, torch.full((8,), -math.log(0.95 / 0.05)))
    gen = model.anchor_generator
    assert gen.num_anchors_per_location == 2 and model.head.num_anchors == 2
    assert (gen.convention, gen.offset, gen.derive_strides) == ("detectron2", 0.25, True)
    assert gen.strides == (8, 16, 32, 64, 128)  # the pair (128, 128) is stored as its square stride
    assert gen.cell_anchors(0).shape == (2, 4)
    assert tuple(model.box_coder.weights) == (10.0, 10.0, 5.0, 5.0)
    assert (model.box_coder.clamp, model.box_coder.symmetric_clamp) == (3.0, True)
    assert model.normalizer.momentum == 0.9
    assert model.pixel_mean.tolist() == pytest.approx([0.1, 0.2, 0.3])
    assert model.pixel_std.tolist() == pytest.approx([0.5, 0.6, 0.7])


# --------------------------------------------------------------------------- training
def test_one_sgd_step_lowers_the_loss_on_a_fixed_batch() -> None:
    model = tiny().train()
    images, targets = fixed_batch()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.0)
    before = model(images, targets)
    total = before["classification"] + before["bbox_regression"]
    assert torch.isfinite(total) and float(before["bbox_regression"]) > 0
    opt.zero_grad()
    total.backward()
    assert model.head.cls_logits.weight.grad is not None
    assert float(model.head.bbox_pred.weight.grad.abs().sum()) > 0
    opt.step()
    after = model(images, targets)
    assert float(after["classification"] + after["bbox_regression"]) < float(total) - 1e-4


def test_images_without_boxes_train() -> None:
    model = tiny().train()
    images, _ = fixed_batch()
    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)} for _ in images]
    losses = model(images, empty)
    assert float(losses["bbox_regression"]) == 0.0
    # Every anchor is background and the normaliser is 1: the loss is the sum over
    # all (anchor, class) pairs of (1 - alpha) p^2 (-log(1 - p)) with p ~ pi = 0.01.
    n_pairs = 2 * model.anchor_generator(model.anchor_generator.feature_sizes_for((128, 128))).num_anchors * 3
    expected = n_pairs * 0.75 * 0.01**2 * -math.log(0.99)
    assert float(losses["classification"]) == pytest.approx(expected, rel=0.2)
    (losses["classification"] + losses["bbox_regression"]).backward()
    assert torch.isfinite(model.head.cls_logits.bias.grad).all()
    # Mixed: one image with boxes, one without.
    _, targets = fixed_batch()
    mixed = model(images, [targets[0], empty[1]])
    assert float(mixed["bbox_regression"]) > 0


def test_image_normalisation_is_the_mean_of_single_image_losses() -> None:
    # Frozen BatchNorm: images do not interact, so the per-image ("image")
    # normalisation must equal the mean of the batch-of-one losses.
    model = tiny(loss={"normalization": "image"}).train()
    g = torch.Generator().manual_seed(5)
    images = [torch.rand(3, 128, 128, generator=g) for _ in range(2)]
    _, targets = fixed_batch()
    both = model(images, targets)
    single = [model([im], [t]) for im, t in zip(images, targets)]
    for key in both:
        torch.testing.assert_close(both[key], (single[0][key] + single[1][key]) / 2, rtol=1e-5, atol=1e-6)
    batch = tiny(loss={"normalization": "batch"}).train()(images, targets)
    assert abs(float(batch["classification"]) - float(both["classification"])) > 1e-4


def test_crowd_boxes_are_not_matched_and_ignore_their_anchors() -> None:
    model = tiny().train()
    images, targets = fixed_batch()
    plain = {"boxes": targets[1]["boxes"], "labels": targets[1]["labels"]}
    crowd = {
        "boxes": torch.cat([targets[1]["boxes"], torch.tensor([[60.0, 40.0, 100.0, 80.0]])]),
        "labels": torch.tensor([1, 0]),
        "iscrowd": torch.tensor([0, 1]),
    }
    a = model(images[1:], [plain])
    b = model(images[1:], [crowd])
    # Same foreground anchors: the same box loss and normaliser ...
    torch.testing.assert_close(a["bbox_regression"], b["bbox_regression"])
    # ... but the background anchors inside the crowd region leave the focal loss.
    assert float(b["classification"]) < float(a["classification"]) - 1e-6


@pytest.mark.parametrize("box_loss", ["smooth_l1", "l1", "giou"])
def test_box_loss_options(box_loss: str) -> None:
    model = tiny(loss={"box_loss": box_loss}).train()
    images, targets = fixed_batch()
    loss = model(images, targets)["bbox_regression"]
    assert math.isfinite(float(loss)) and float(loss) > 0
    if box_loss == "giou":
        assert float(loss) <= 2.0  # GIoU loss of one box is in [0, 2]
    if box_loss == "smooth_l1":
        l1 = tiny(loss={"box_loss": "l1"}).train()(images, targets)["bbox_regression"]
        # Smooth L1 (beta = 0.11) is below L1 everywhere.
        assert float(loss) < float(l1)


def test_resize_scales_boxes_and_maps_detections_back() -> None:
    model = tiny(transform={"min_size": 64, "max_size": 80})
    images = [torch.rand(3, 100, 140), torch.rand(3, 140, 100)]
    batch, sizes, original, targets = model.preprocess(
        images, [{"boxes": torch.tensor([[14.0, 10.0, 140.0, 100.0]]), "labels": torch.tensor([0])}] * 2
    )
    # scale = min(64 / 100, 80 / 140) = 4 / 7.
    assert sizes == [(57, 80), (80, 57)] and original == [(100, 140), (140, 100)]
    assert batch.shape == (2, 3, 128, 128)
    torch.testing.assert_close(targets[0]["boxes"], torch.tensor([[8.0, 5.7, 80.0, 57.0]]))
    raise_scores(model)
    model.eval()
    out = model(images)
    assert out[0]["boxes"].shape[0] > 0
    for det, (h, w) in zip(out, original):
        assert float(det["boxes"][:, 2].max()) <= w + 1e-3 and float(det["boxes"][:, 3].max()) <= h + 1e-3
        # Boxes reach beyond the resized size: they were mapped back.
        assert float(det["boxes"][:, 2:].max()) > 81


# --------------------------------------------------------------------------- inference
def test_eval_outputs_shapes_dtypes_and_limits() -> None:
    model = tiny(inference={"detections_per_img": 50})
    raise_scores(model)
    model.eval()
    images = [torch.rand(3, 96, 128), torch.rand(3, 64, 64)]
    out = model(images)
    assert len(out) == 2
    for det, (h, w) in zip(out, [(96, 128), (64, 64)]):
        n = det["boxes"].shape[0]
        assert 0 < n <= 50
        assert det["boxes"].dtype == torch.float32 and det["scores"].dtype == torch.float32
        assert det["labels"].dtype == torch.int64 and det["labels"].shape == (n,)
        assert bool((det["labels"] >= 0).all() and (det["labels"] < 3).all())
        assert bool((det["scores"] > 0.05).all())
        assert bool((det["scores"][1:] <= det["scores"][:-1]).all())
        b = det["boxes"]
        assert bool((b[:, 0] >= 0).all() and (b[:, 2] <= w).all() and (b[:, 3] <= h).all())
        assert bool((b[:, 2] >= b[:, 0]).all())
    # Without raising the bias, random weights give no score above 0.05.
    quiet = tiny().eval()
    assert all(d["boxes"].shape == (0, 4) for d in quiet(images))


def _same_detections(a: dict, b: dict) -> None:
    """Equal up to the order of (nearly) tied scores: match every detection."""
    assert a["boxes"].shape == b["boxes"].shape
    close = (
        ((a["boxes"][:, None] - b["boxes"][None]).abs().amax(-1) < 1e-3)
        & ((a["scores"][:, None] - b["scores"][None]).abs() < 1e-5)
        & (a["labels"][:, None] == b["labels"][None])
    )
    assert bool(close.any(1).all() and close.any(0).all())


def test_batched_and_per_image_inference_agree() -> None:
    model = tiny(inference={"detections_per_img": 1000})
    raise_scores(model, std=1.0)
    model.eval()
    g = torch.Generator().manual_seed(7)
    # Both pad to 128 x 128, alone or together.
    images = [torch.rand(3, 128, 128, generator=g), torch.rand(3, 100, 120, generator=g)]
    together = model(images)
    stacked = model(torch.stack([images[0], images[0]]))
    for i, im in enumerate(images):
        alone = model([im])[0]
        assert alone["boxes"].shape[0] > 10
        _same_detections(alone, together[i])
    _same_detections(stacked[1], together[0])
    _same_detections(stacked[0], stacked[1])


def _reference_postprocess(model: RetinaNet, cls_levels, box_levels, feature_sizes, image_sizes):
    """torchvision's algorithm, literally: loop over images and levels."""
    cfg = model.config
    anchors = model.anchor_generator(feature_sizes).per_level()
    out = []
    for i, (h, w) in enumerate(image_sizes):
        boxes, scores, labels = [], [], []
        for logits, deltas, anc in zip(cls_levels, box_levels, anchors):
            s = torch.sigmoid(logits[i]).flatten()
            idx = torch.where(s > cfg.inference.score_threshold)[0]
            s = s[idx]
            s, j = s.topk(min(cfg.inference.topk_candidates, idx.numel()))
            idx = idx[j]
            a = idx // cfg.num_classes
            bx = model.box_coder.decode(deltas[i][a], anc[a])
            bx = torch.stack(
                [bx[:, 0].clamp(0, w), bx[:, 1].clamp(0, h), bx[:, 2].clamp(0, w), bx[:, 3].clamp(0, h)], 1
            )
            boxes.append(bx), scores.append(s), labels.append(idx % cfg.num_classes)
        boxes, scores, labels = torch.cat(boxes), torch.cat(scores), torch.cat(labels)
        keep = batched_nms(boxes, scores, labels, cfg.inference.nms_threshold)[
            : cfg.inference.detections_per_img
        ]
        out.append({"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]})
    return out


@pytest.mark.parametrize(("limit", "top"), [(3, 1000), (40, 50), (1000, 1000)])
def test_postprocess_equals_plain_per_image_per_level_loop(limit: int, top: int) -> None:
    # limit 3: NMS on the 6 best first, then 24, then all (heavy suppression at
    # IoU 0.2 forces the later passes); limit 1000: no cap at all.
    model = tiny(inference={"detections_per_img": limit, "topk_candidates": top, "nms_threshold": 0.2})
    raise_scores(model, bias=-2.5, std=1.0)
    model.eval()
    g = torch.Generator().manual_seed(11)
    images = [torch.rand(3, 128, 128, generator=g), torch.rand(3, 96, 128, generator=g)]
    with torch.no_grad():
        batch, sizes, original, _ = model.preprocess(images)
        cls_l, box_l = model.dense(batch)
    feats = model.anchor_generator.feature_sizes_for(tuple(batch.shape[-2:]))
    got = model.postprocess(cls_l, box_l, feats, sizes, original)
    want = _reference_postprocess(model, cls_l, box_l, feats, sizes)
    for a, b in zip(got, want):
        assert b["boxes"].shape[0] == min(limit, b["boxes"].shape[0]) and b["boxes"].shape[0] > 2
        assert torch.equal(a["labels"], b["labels"])
        torch.testing.assert_close(a["scores"], b["scores"], atol=0, rtol=0)
        torch.testing.assert_close(a["boxes"], b["boxes"], atol=0, rtol=0)


def test_nms_and_detection_cap_are_per_image_and_per_class() -> None:
    model = tiny(inference={"detections_per_img": 7, "nms_threshold": 0.5})
    raise_scores(model, bias=0.0, std=0.5)
    model.eval()
    images = torch.rand(2, 3, 64, 64)
    out = model(images)
    assert [d["boxes"].shape[0] for d in out] == [7, 7]
    from focal_detect.boxes import box_iou

    for det in out:
        iou = box_iou(det["boxes"], det["boxes"])
        same = det["labels"][:, None] == det["labels"][None, :]
        off = ~torch.eye(len(iou), dtype=torch.bool)
        assert not bool(((iou > 0.5) & same & off).any())


# --------------------------------------------------------------------------- input checks
def _target(boxes: list[list[float]], labels: list[int]) -> dict[str, torch.Tensor]:
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
    }


@pytest.mark.parametrize(
    ("target", "match"),
    [
        (_target([[0, 0, 10, float("nan")]], [0]), r"targets\[0\]\['boxes'\] must be finite"),
        (_target([[10, 0, 5, 10]], [0]), r"targets\[0\]\['boxes'\] must have x2 >= x1"),
        (_target([[0, 0, 10, 10]], [3]), r"targets\[0\]\['labels'\] must be in \[0, 3\)"),
        (_target([[0, 0, 10, 10]], [-1]), r"targets\[0\]\['labels'\] must be in"),
        (
            {"boxes": torch.zeros(2, 5), "labels": torch.zeros(2, dtype=torch.int64)},
            r"\['boxes'\] must have shape",
        ),
        (
            {"boxes": torch.zeros(2, 4), "labels": torch.zeros(3, dtype=torch.int64)},
            r"\['labels'\] must have shape",
        ),
        ({"boxes": torch.zeros(2, 4)}, "must have key 'labels'"),
    ],
)
def test_bad_targets_raise_value_error_naming_the_argument(target: dict, match: str) -> None:
    model = tiny().train()
    with pytest.raises(ValueError, match=match):
        model([torch.rand(3, 64, 64)], [target])


def test_bad_target_in_a_later_image_is_named_by_its_index() -> None:
    # The values of the whole batch are checked at once; the message still names the image.
    model = tiny().train()
    good = _target([[0, 0, 10, 10]], [0])
    empty = _target([], [])
    bad = _target([[0, 0, 10, 10], [5, 5, 4, 9]], [1, 2])
    with pytest.raises(ValueError, match=r"targets\[2\]\['boxes'\] must have x2 >= x1.*at row 1"):
        model([torch.rand(3, 64, 64)] * 3, [good, empty, bad])


def test_bad_images_and_missing_targets_raise() -> None:
    model = tiny().train()
    with pytest.raises(ValueError, match="targets must be given"):
        model([torch.rand(3, 64, 64)])
    with pytest.raises(ValueError, match="targets must have one dict per image"):
        model([torch.rand(3, 64, 64)], [])
    with pytest.raises(ValueError, match=r"images\[0\] must have shape \(3, H, W\)"):
        model.eval()([torch.rand(1, 64, 64)])
    with pytest.raises(TypeError, match="floating-point"):
        model.eval()([torch.zeros(3, 64, 64, dtype=torch.uint8)])
    with pytest.raises(TypeError, match=r"image.float\(\) / 255"):
        model.eval()(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_floating_images_of_any_dtype_are_cast_to_the_model_dtype(dtype: torch.dtype) -> None:
    # 0.1.0 failed deep in the backbone ("expected scalar type Double but found Float").
    model = tiny().train()
    images, targets = fixed_batch()
    cast = [im.to(dtype) for im in images]
    ref = model([im.to(dtype).float() for im in images], targets)  # the same rounded pixels
    got = model(cast, targets)
    for key in ref:
        assert got[key].dtype == torch.float32
        torch.testing.assert_close(got[key], ref[key], rtol=0, atol=0)
    model.eval()
    det = model(cast[0][None])  # the (B, 3, H, W) tensor input
    ref_det = model(cast[0][None].float())
    torch.testing.assert_close(det[0]["scores"], ref_det[0]["scores"], rtol=0, atol=0)
    # a float64 model computes in float64 from float32 images
    double = tiny().double().eval()
    assert double([images[0]])[0]["scores"].dtype == torch.float64


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16, torch.int32])
def test_integer_labels_of_any_width_give_the_int64_loss(dtype: torch.dtype) -> None:
    model = tiny().train()
    images, targets = fixed_batch()
    ref = model(images, targets)
    narrow = [{**t, "labels": t["labels"].to(dtype)} for t in targets]
    got = model(images, narrow)
    for key in ref:
        torch.testing.assert_close(got[key], ref[key], rtol=0, atol=0)


# --------------------------------------------------------------------------- torchvision
def _golden_model(channels_last: bool = False) -> tuple[RetinaNet, dict]:
    golden = torch.load(GOLDEN, weights_only=True)
    s = golden["settings"]
    cfg = RetinaNetConfig.preset(
        "torchvision_v1",
        s["num_classes"],
        backbone={
            "depth": s["backbone_depth"],
            "width": s["backbone_width"],
            "frozen_bn": False,  # torchvision's weights=None model: trainable BatchNorm
            "trainable_layers": 5,
            "channels_last": channels_last,
        },
        fpn={"channels": s["fpn_channels"]},
        transform={"min_size": s["min_size"], "max_size": s["max_size"]},
        inference={
            "detections_per_img": s["detections_per_img"],
            "topk_candidates": s["topk_candidates"],
            "score_threshold": s["score_thresh"],
            "nms_threshold": s["nms_thresh"],
        },
    )
    model = RetinaNet(cfg)
    load_torchvision_retinanet(model, golden["state_dict"])
    return model, golden


@pytest.mark.parametrize("channels_last", [False, True])
def test_torchvision_golden_detections_and_losses(channels_last: bool) -> None:
    # Golden file: tests/data/make_retinanet_golden.py, torchvision 0.29.1 / torch 2.14.1,
    # RetinaNet on a width-1/8 ResNet-50 FPN (P6 from P5), 3 images (one without boxes).
    # channels_last changes the memory layout only: same detections within 1e-4.
    model, golden = _golden_model(channels_last)
    model.eval()
    with torch.no_grad():
        dets = model([im.clone() for im in golden["images"]])
    for ours, ref in zip(dets, golden["detections"]):
        assert ours["boxes"].shape == ref["boxes"].shape and ref["boxes"].shape[0] > 100
        assert torch.equal(ours["labels"], ref["labels"])
        torch.testing.assert_close(ours["boxes"], ref["boxes"], atol=1e-4, rtol=0)
        torch.testing.assert_close(ours["scores"], ref["scores"], atol=1e-4, rtol=0)
    model.train()
    losses = model([im.clone() for im in golden["images"]], golden["targets"])
    for key, ref in golden["losses"].items():
        torch.testing.assert_close(losses[key].detach(), ref, atol=1e-4, rtol=1e-4)


def test_torchvision_loader_rejects_mismatched_models() -> None:
    golden = torch.load(GOLDEN, weights_only=True)
    wrong = RetinaNet(
        RetinaNetConfig.preset(
            "torchvision_v1", 5, backbone={"width": 8, "frozen_bn": False}, fpn={"channels": 32}
        )
    )
    with pytest.raises(ValueError, match="shapes must match"):
        load_torchvision_retinanet(wrong, golden["state_dict"])
    partial = dict(golden["state_dict"])
    partial.pop("head.regression_head.bbox_reg.bias")
    model, _ = _golden_model()
    with pytest.raises(ValueError, match="missing"):
        load_torchvision_retinanet(model, partial)


# --------------------------------------------------------------------------- compile / export
@pytest.mark.slow
def test_compiled_inference_path_matches_eager() -> None:
    eager = tiny()
    raise_scores(eager)
    eager.eval()
    model = tiny()
    model.load_state_dict(eager.state_dict())
    model.eval()
    # Inductor compiles dozens of C++ kernels (minutes on a 2-core CI machine); the
    # default checks that the whole dense path traces as one graph (Dynamo + AOT
    # autograd). FOCAL_DETECT_COMPILE_BACKEND=inductor runs the full compiler.
    backend = os.environ.get("FOCAL_DETECT_COMPILE_BACKEND", "aot_eager")
    model.dense = torch.compile(model.dense, fullgraph=True, dynamic=False, backend=backend)
    images = [torch.rand(3, 64, 64), torch.rand(3, 50, 60)]
    with torch.no_grad():
        got, want = model(images), eager(images)
    assert want[0]["boxes"].shape[0] > 0
    for a, b in zip(got, want):
        _same_detections(a, b)


@pytest.mark.slow
def test_exported_dense_path_matches_eager() -> None:
    model = tiny().eval()

    class Dense(nn.Module):
        def __init__(self, m: RetinaNet) -> None:
            super().__init__()
            self.m = m

        def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
            return self.m.dense(x)

    x = torch.randn(1, 3, 128, 128)
    exported = torch.export.export(Dense(model), (x,))
    got = exported.module()(x)
    want = model.dense(x)
    for a, b in zip(got[0] + got[1], want[0] + want[1]):
        torch.testing.assert_close(a, b)


# --------------------------------------------------------------------------- matcher / strides config


@pytest.mark.parametrize(
    "changes",
    [
        {"low_quality": "mmdetection"},
        {"min_low_quality_iou": None},
        {"min_low_quality_iou": 0.2, "crowd_ioa_threshold": None},
        {"allow_low_quality_matches": False, "crowd_ioa_threshold": 0.7},
        {"high_threshold": 0.6, "low_threshold": 0.3},
    ],
)
def test_every_matching_option_reaches_assign_anchors(monkeypatch, changes) -> None:
    import dataclasses

    import focal_detect.models.retinanet as rn

    seen: dict = {}
    real = rn.assign_anchors

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(rn, "assign_anchors", spy)
    model = tiny(matcher=changes).train()
    model(
        [torch.rand(3, 64, 64)],
        [{"boxes": torch.tensor([[8.0, 8.0, 40.0, 48.0]]), "labels": torch.tensor([1])}],
    )
    # Every field of the matcher group is an assign_anchors keyword of the same name.
    defaults = dataclasses.asdict(MatcherConfig())
    assert set(defaults) == {
        "high_threshold",
        "low_threshold",
        "allow_low_quality_matches",
        "low_quality",
        "min_low_quality_iou",
        "crowd_ioa_threshold",
    }
    for key, default in defaults.items():
        assert seen[key] == changes.get(key, default), key


def test_config_rejects_bad_matching_and_stride_settings() -> None:
    for changes, match in [
        ({"matcher": {"low_quality": "detectron"}}, "matcher: low_quality must be one of"),
        ({"matcher": {"min_low_quality_iou": 1.5}}, "matcher: min_low_quality_iou must be a number in"),
        ({"matcher": {"crowd_ioa_threshold": 0.0}}, "matcher: crowd_ioa_threshold must be a number in"),
        ({"anchors": {"derive_strides": 1}}, "anchors: derive_strides must be a bool"),
        (
            {"anchors": {"strides": (8, 16, 32, 64)}},
            r"anchors: settings must make an AnchorGenerator.*strides must have the same length",
        ),
        (
            {"anchors": {"strides": (8, 16, 32, 64, (128, 0))}},
            r"anchors: settings must make an AnchorGenerator.*must be positive",
        ),
        (  # a valid generator, but its anchors would not sit on the model's P3-P7 maps
            {"anchors": {"strides": (8, 16, 32, 64, (128, 64))}},
            r"anchors: strides must be the pyramid's \(8, 16, 32, 64, 128\) on both axes",
        ),
    ]:
        with pytest.raises(ValueError, match="RetinaNetConfig." + match):
            RetinaNetConfig().replace(**changes)


def test_derived_strides_need_the_padded_size() -> None:
    model = tiny(anchors={"derive_strides": True}, transform={"size_divisible": 32}).eval()
    with torch.no_grad():
        batch, sizes, original, _ = model.preprocess([torch.rand(3, 96, 160)])
        cls, box = model.dense(batch)
    fs = model.anchor_generator.feature_sizes_for(tuple(batch.shape[-2:]))  # (96, 160): P7 1 x 2 cells
    with pytest.raises(ValueError, match="padded_size .* must be given when the anchor strides are derived"):
        model.postprocess(cls, box, fs, sizes, original)
    with pytest.raises(ValueError, match="image_size .* must be given"):
        model.compute_loss(torch.cat(cls, 1), torch.cat(box, 1), [], fs)
    assert model.anchor_generator.level_strides(fs, image_size=(96, 160))[4] == (96, 80)
    det = model.postprocess(cls, box, fs, sizes, original, padded_size=(96, 160))
    assert len(det) == 1 and det[0]["boxes"].shape[-1] == 4


def test_target_value_checks_cost_one_host_sync_per_batch() -> None:
    # A host synchronisation is a read of a tensor's value on the host
    # (aten._local_scalar_dense: bool(), .item(), int()); a valid batch costs exactly one,
    # however many images it has. A bad batch may cost more (it names the image).
    from torch.utils._python_dispatch import TorchDispatchMode

    from focal_detect.models.inputs import check_targets

    class CountReads(TorchDispatchMode):
        reads = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten._local_scalar_dense.default:
                CountReads.reads += 1
            return func(*args, **(kwargs or {}))

    _, targets = fixed_batch()
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    targets = [*targets * 3, empty]  # seven images, one without boxes
    with CountReads():
        check_targets(targets, len(targets), 3)
    assert CountReads.reads == 1
    bad = [dict(t) for t in targets]
    bad[4] = {"boxes": torch.tensor([[4.0, 0.0, 2.0, 8.0]]), "labels": torch.tensor([0])}
    with pytest.raises(ValueError, match=r"targets\[4\]\['boxes'\] must have x2 >= x1"):
        check_targets(bad, len(bad), 3)
