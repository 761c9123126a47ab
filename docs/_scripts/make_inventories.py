"""Write the small intersphinx inventories in ``docs/_intersphinx/``.

The docs build runs offline, so it cannot download ``objects.inv`` from
docs.python.org or docs.pytorch.org. These hand-made inventories list only the
external names our signatures and pages use; the links they produce point at the
real online pages. Names missing here are ignored by ``nitpick_ignore_regex`` in
``conf.py`` (they render as plain text), so extend the tables when a new external name
should become a link.

Every object's URI must be ``page.html#anchor`` (``page.html#$``: ``$`` at the end
stands for the object's name, as in Sphinx's own inventories) on a page listed in the
project's ``*_PAGES`` table; those pages are written as ``std:doc`` entries, as a real
``objects.inv`` lists its documents. ``docs/_ext/external_links.py`` checks, during the
``-W`` build, that every link generated into these inventories has a fragment and
points to one of their pages.

Usage::

    python docs/_scripts/make_inventories.py
"""

from __future__ import annotations

import zlib
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "_intersphinx"

# Pages of the online documentation the entries below point into (relative to the
# project's base URL, as in ``intersphinx_mapping``).
PYTHON_PAGES = [
    "library/functions.html",
    "library/stdtypes.html",
    "library/constants.html",
    "library/exceptions.html",
    "library/collections.abc.html",
    "library/typing.html",
    "library/dataclasses.html",
    "library/pathlib.html",
    "library/os.html",
]

TORCH_PAGES = [
    "tensors.html",
    "tensor_attributes.html",
    "generated/torch.Generator.html",
    "generated/torch.nn.Module.html",
    "generated/torch.nn.Conv2d.html",
    "generated/torch.nn.parameter.Parameter.html",
    "generated/torch.nn.BCEWithLogitsLoss.html",
    "generated/torch.nn.CrossEntropyLoss.html",
    "generated/torch.nn.functional.binary_cross_entropy_with_logits.html",
    "generated/torch.nn.functional.smooth_l1_loss.html",
    "autograd.html",
    "data.html",
    "optim.html",
    "generated/torch.optim.SGD.html",
    "generated/torch.compile.html",
    "distributed.html",
    "generated/torch.nn.parallel.DistributedDataParallel.html",
]

TORCHVISION_PAGES = [
    "generated/torchvision.ops.sigmoid_focal_loss.html",
    "generated/torchvision.ops.box_iou.html",
    "generated/torchvision.ops.nms.html",
    "generated/torchvision.ops.batched_nms.html",
    "models/retinanet.html",
    "models/generated/torchvision.models.detection.retinanet_resnet50_fpn.html",
]

# (name, role, uri) -- uri relative to the project's base URL; a "$" at the end stands
# for the name ("tensors.html#$" -> "tensors.html#torch.Tensor").
PYTHON = [
    ("int", "py:class", "library/functions.html#int"),
    ("float", "py:class", "library/functions.html#float"),
    ("bool", "py:class", "library/functions.html#bool"),
    ("str", "py:class", "library/stdtypes.html#str"),
    ("bytes", "py:class", "library/stdtypes.html#bytes"),
    ("tuple", "py:class", "library/stdtypes.html#tuple"),
    ("list", "py:class", "library/stdtypes.html#list"),
    ("dict", "py:class", "library/stdtypes.html#dict"),
    ("object", "py:class", "library/functions.html#object"),
    ("None", "py:data", "library/constants.html#None"),
    ("ValueError", "py:exception", "library/exceptions.html#ValueError"),
    ("TypeError", "py:exception", "library/exceptions.html#TypeError"),
    ("RuntimeError", "py:exception", "library/exceptions.html#RuntimeError"),
    ("collections.abc.Sequence", "py:class", "library/collections.abc.html#$"),
    ("collections.abc.Mapping", "py:class", "library/collections.abc.html#$"),
    ("collections.abc.Iterable", "py:class", "library/collections.abc.html#$"),
    ("collections.abc.Iterator", "py:class", "library/collections.abc.html#$"),
    ("collections.abc.Callable", "py:class", "library/collections.abc.html#$"),
    ("typing.Sequence", "py:class", "library/typing.html#$"),
    ("typing.Any", "py:data", "library/typing.html#$"),
    ("typing.Literal", "py:data", "library/typing.html#$"),
    ("typing.NamedTuple", "py:class", "library/typing.html#$"),
    ("typing.Optional", "py:data", "library/typing.html#$"),
    ("dataclasses.dataclass", "py:function", "library/dataclasses.html#$"),
    ("pathlib.Path", "py:class", "library/pathlib.html#$"),
    ("os.PathLike", "py:class", "library/os.html#$"),
]

TORCH = [
    ("torch.Tensor", "py:class", "tensors.html#$"),
    ("torch.dtype", "py:class", "tensor_attributes.html#$"),
    ("torch.device", "py:class", "tensor_attributes.html#$"),
    ("torch.Generator", "py:class", "generated/torch.Generator.html#$"),
    ("torch.nn.Module", "py:class", "generated/torch.nn.Module.html#$"),
    ("torch.nn.Conv2d", "py:class", "generated/torch.nn.Conv2d.html#$"),
    (
        "torch.nn.Parameter",
        "py:class",
        "generated/torch.nn.parameter.Parameter.html#torch.nn.parameter.Parameter",
    ),
    ("torch.nn.BCEWithLogitsLoss", "py:class", "generated/torch.nn.BCEWithLogitsLoss.html#$"),
    ("torch.nn.CrossEntropyLoss", "py:class", "generated/torch.nn.CrossEntropyLoss.html#$"),
    (
        "torch.nn.functional.binary_cross_entropy_with_logits",
        "py:function",
        "generated/torch.nn.functional.binary_cross_entropy_with_logits.html#$",
    ),
    (
        "torch.nn.functional.smooth_l1_loss",
        "py:function",
        "generated/torch.nn.functional.smooth_l1_loss.html#$",
    ),
    ("torch.autograd.Function", "py:class", "autograd.html#$"),
    ("torch.utils.data.Dataset", "py:class", "data.html#$"),
    ("torch.utils.data.DataLoader", "py:class", "data.html#$"),
    ("torch.utils.data.DistributedSampler", "py:class", "data.html#$"),
    ("torch.optim.Optimizer", "py:class", "optim.html#$"),
    ("torch.optim.SGD", "py:class", "generated/torch.optim.SGD.html#$"),
    ("torch.compile", "py:function", "generated/torch.compile.html#$"),
    ("torch.distributed.all_reduce", "py:function", "distributed.html#$"),
    (
        "torch.nn.parallel.DistributedDataParallel",
        "py:class",
        "generated/torch.nn.parallel.DistributedDataParallel.html#$",
    ),
]

TORCHVISION = [
    (
        "torchvision.ops.sigmoid_focal_loss",
        "py:function",
        "generated/torchvision.ops.sigmoid_focal_loss.html#$",
    ),
    ("torchvision.ops.box_iou", "py:function", "generated/torchvision.ops.box_iou.html#$"),
    ("torchvision.ops.nms", "py:function", "generated/torchvision.ops.nms.html#$"),
    ("torchvision.ops.batched_nms", "py:function", "generated/torchvision.ops.batched_nms.html#$"),
    ("torchvision.models.detection.RetinaNet", "py:class", "models/retinanet.html#retinanet"),
    (
        "torchvision.models.detection.retinanet_resnet50_fpn",
        "py:function",
        "models/generated/torchvision.models.detection.retinanet_resnet50_fpn.html#$",
    ),
]


def check(project: str, pages: list[str], entries: list[tuple[str, str, str]]) -> None:
    """Refuse an entry without a ``#`` fragment or on a page not in ``pages``."""
    for name, _role, uri in entries:
        page, sep, fragment = uri.partition("#")
        if not sep or not fragment:
            raise ValueError(f"{project}: {name}: uri must be 'page.html#anchor', got {uri!r}")
        if page not in pages:
            raise ValueError(f"{project}: {name}: page {page!r} is not in the {project} pages")


def write(
    path: Path,
    project: str,
    version: str,
    pages: list[str],
    entries: list[tuple[str, str, str]],
) -> None:
    """Write one version-2 Sphinx inventory (zlib-compressed body)."""
    check(project, pages, entries)
    docs = [(page.removesuffix(".html"), "std:doc", page) for page in pages]
    header = (
        "# Sphinx inventory version 2\n"
        f"# Project: {project}\n"
        f"# Version: {version}\n"
        "# The remainder of this file is compressed using zlib.\n"
    ).encode()
    lines = [f"{name} {role} 1 {uri} -\n" for name, role, uri in sorted(entries + docs)]
    path.write_bytes(header + zlib.compress("".join(lines).encode()))


def main() -> None:
    OUT.mkdir(exist_ok=True)
    write(OUT / "python.inv", "Python", "3", PYTHON_PAGES, PYTHON)
    write(OUT / "torch.inv", "PyTorch", "stable", TORCH_PAGES, TORCH)
    write(OUT / "torchvision.inv", "torchvision", "stable", TORCHVISION_PAGES, TORCHVISION)
    print(f"wrote {len(PYTHON)} + {len(TORCH)} + {len(TORCHVISION)} entries to {OUT}")


if __name__ == "__main__":
    main()
