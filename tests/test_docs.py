"""The documentation's code runs and says what the library does.

Nothing here builds the Sphinx site (CI runs ``sphinx -W`` separately). These tests run
the code the pages show: the quickstart snippet, the tutorials (the torchvision one
against a golden file, so it is checked without torchvision), the Figure 1 script, and
they check that the API pages document each public name exactly once.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import pkgutil
import re
import runpy
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
DATA = Path(__file__).resolve().parent / "data"

# Modules that have landed before their API page (keep empty at release).
NOT_YET_DOCUMENTED: set[str] = set()


def load_module(path: Path) -> ModuleType:
    """Import a docs script (not a package) under a private name."""
    name = "_docs_" + path.stem
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- API pages

_DIRECTIVE = re.compile(
    r"^\.\. (automodule|currentmodule|py:module|autofunction|autoclass|"
    r"autodata|autoexception)::\s*(\S+)",
    re.M,
)


def documented_entries() -> tuple[list[tuple[str, str]], set[str]]:
    """(module, name) of each auto* directive on the API pages, and the modules named."""
    entries: list[tuple[str, str]] = []
    modules: set[str] = set()
    for page in sorted((DOCS / "api").glob("*.rst")):
        current = None
        for kind, target in _DIRECTIVE.findall(page.read_text()):
            if kind in ("automodule", "currentmodule", "py:module"):
                current = target
                modules.add(current)
            else:
                assert current is not None, f"{page.name}: {target} before a module"
                entries.append((current, target))
    return entries, modules


def _public(module_name: str) -> list[str]:
    module = importlib.import_module(module_name)
    return [n for n in getattr(module, "__all__", []) if not n.startswith("__")]


def _key(module_name: str, name: str) -> tuple[str, int]:
    return name, id(getattr(importlib.import_module(module_name), name))


def _public_modules() -> list[str]:
    import focal_detect

    names = ["focal_detect"]
    for info in pkgutil.walk_packages(focal_detect.__path__, "focal_detect."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            names.append(info.name)
    return names


def test_api_pages_document_each_public_object_exactly_once() -> None:
    entries, modules = documented_entries()
    assert {"focal_detect.losses", "focal_detect.anchors", "focal_detect.matching"} <= modules
    for module_name, name in entries:
        assert name in _public(module_name), f"{module_name}.{name} is not in its __all__"
    keys = [_key(m, n) for m, n in entries]
    twice = sorted({f"{m}.{n}" for (m, n), k in zip(entries, keys) if keys.count(k) > 1})
    assert not twice, f"documented more than once: {twice}"
    missing = [f"{m}.{n}" for m in sorted(modules) for n in _public(m) if _key(m, n) not in keys]
    assert not missing, f"public but not on any API page: {missing}"


def test_every_public_module_is_covered_by_the_api_pages() -> None:
    """Every name in the __all__ of every public module appears on an API page."""
    keys = {_key(m, n) for m, n in documented_entries()[0]}
    missing = [
        f"{m}.{n}"
        for m in _public_modules()
        if m not in NOT_YET_DOCUMENTED
        for n in _public(m)
        if _key(m, n) not in keys
    ]
    assert not missing, f"public but not on any API page: {missing}"


# ------------------------------------------------------------------------- quickstart


def test_quickstart_snippet_runs_and_normalises_by_foreground(capsys) -> None:
    from focal_detect.losses import sigmoid_focal_loss

    namespace = runpy.run_path(str(DOCS / "_snippets" / "quickstart.py"))
    out = capsys.readouterr().out
    logits, labels, loss = namespace["logits"], namespace["labels"], namespace["loss"]
    # Independent recomputation: dense one-hot target, ignored anchor removed, / 2 fg.
    keep = labels != -2
    onehot = torch.zeros_like(logits)
    fg = labels >= 0
    onehot[fg, labels[fg]] = 1.0
    expected = sigmoid_focal_loss(logits.detach()[keep], onehot[keep], reduction="sum") / 2
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-5, atol=1e-6)
    assert logits.grad is not None and logits.grad[1, 43].abs().sum() == 0  # IGNORE row
    assert f"loss = {loss.item():.3f}" in out
    # What the start page says it prints (the prior-initialised head: about 1.19, not
    # the ~20 000 of random logits).
    from tutorial_pages import console_output

    assert out.rstrip("\n").split("\n") == console_output("../index.rst", "python quickstart.py")
    assert 1.0 < loss.item() < 1.5


def test_user_guide_pipeline_snippet_runs_and_matches_the_dense_path(capsys) -> None:
    from focal_detect.matching import assign_anchors

    ns = runpy.run_path(str(DOCS / "_snippets" / "pipeline.py"))
    targets, fg = ns["targets"], ns["fg"]
    # Paper anchors at 256 x 256 and the snippet's boxes (printed on the user guide page).
    assert fg.sum(1).tolist() == [30, 68]
    # The windowed fast path (the Anchors value) gives exactly the dense result (a tensor).
    dense = assign_anchors(ns["anchors"].boxes, ns["gt_boxes"], ns["gt_labels"])
    assert torch.equal(dense.labels, targets.labels)
    assert torch.equal(dense.box_targets, targets.box_targets)
    # Loss = (focal sum + smooth-L1 sum) / foreground count, and it backpropagates.
    divisor = float(fg.sum())
    assert ns["loss"].item() == pytest.approx(
        (ns["cls_loss"].item() + ns["box_loss"].item()) / divisor, rel=1e-6
    )
    assert ns["cls_logits"].grad is not None and ns["box_deltas"].grad[~fg].abs().sum() == 0
    assert "foreground per image" in capsys.readouterr().out


# -------------------------------------------------------------------------- tutorials


_WHOLE_FILE_OPTIONS = {":language:", ":linenos:", ":caption:"}


def test_tutorial_pages_display_whole_files_and_no_untested_code() -> None:
    """Each tutorial script is shown whole (no excerpts), and no page has inline code.

    Every ``.py`` and ``.toml`` file in docs/tutorials is ``literalinclude``-d by a
    tutorial page with only display options, so the page shows exactly the file the
    tests run; Python code is never typed inline into a page.
    """
    included: set[str] = set()
    directive = re.compile(r"^\.\. literalinclude:: (\S+)\n((?:   :.*\n)*)", re.MULTILINE)
    for page in sorted((DOCS / "tutorials").glob("*.rst")):
        text = page.read_text()
        assert ".. code-block:: python" not in text, f"{page.name}: inline Python code"
        for target, options in directive.findall(text):
            used = {f":{line.split(':')[1]}:" for line in options.split("\n") if line}
            assert used <= _WHOLE_FILE_OPTIONS, f"{page.name}: {target} shown in part: {used}"
            included.add(target)
    files = {p.name for p in (DOCS / "tutorials").iterdir() if p.suffix in (".py", ".toml")}
    assert files <= included, f"tutorial files no page shows: {sorted(files - included)}"
    assert {"coco_python.py", "torchrun_train.py", "torchvision_retinanet.py"} <= files


def test_imbalanced_tutorial_prints_the_page_table_and_focal_loss_helps_the_rare_class() -> None:
    from tutorial_pages import console_output, run_tutorial

    command = "python imbalanced_classification.py"
    shown = console_output("imbalanced_classification.rst", command)
    printed = run_tutorial("imbalanced_classification.py")
    assert printed[0] == shown[0] and len(printed) == len(shown) == 4
    rows = {}
    for ours, theirs in zip(printed[1:], shown[1:]):
        name, *values = ours.split()
        assert name == theirs.split()[0]
        assert [float(v) for v in values] == pytest.approx(
            [float(v) for v in theirs.split()[1:]], abs=0.005
        ), (ours, theirs)
        rows[name] = dict(zip(("recall", "precision", "ap", "easy"), map(float, values)))
    bce, focal = rows["bce"], rows["focal"]
    # At the default 0.5 threshold the alpha-balanced focal loss finds clearly more of
    # the rare class than plain BCE ...
    assert focal["recall"] >= bce["recall"] + 0.1, rows
    # ... without ranking worse (average precision within 0.03) ...
    assert focal["ap"] >= bce["ap"] - 0.03, rows
    # ... and well-classified examples carry almost none of its loss (gamma's job).
    assert focal["easy"] < bce["easy"] / 10, rows
    assert rows["alpha-bce"]["easy"] > 10 * focal["easy"], rows


@pytest.fixture(scope="module")
def tiny_shapes(tmp_path_factory) -> Path:
    """``focal-detect export-synthetic`` as the COCO tutorial runs it, at a tiny size."""
    pytest.importorskip("PIL")
    pytest.importorskip("pycocotools")
    from focal_detect.cli import main

    folder = tmp_path_factory.mktemp("tutorial")
    for split, n, seed in (("shapes_train", 8, 0), ("shapes_val", 4, 1)):
        main(
            [
                "export-synthetic",
                str(folder / "data" / split),
                "--num-images",
                str(n),
                "--image-size",
                "32",
                "--seed",
                str(seed),
            ]
        )
    return folder


def _shape_of(line: str) -> list[str]:
    """A printed line's words, numbers replaced ("trained 4 steps in 2 s" -> "trained # ...")."""
    return re.sub(r"\d+(\.\d+)?|n/a", "#", line).split()


@pytest.mark.slow
def test_coco_python_tutorial_runs_as_displayed(tiny_shapes) -> None:
    """coco_python.py, as shown, in the folder the page's export commands write.

    Tiny settings (FOCAL_DETECT_TUTORIAL_TINY=1); the printed lines have the form the
    page shows, with the step count the script configures and the COCO table.
    """
    from tutorial_pages import console_output, run_tutorial

    shown = console_output("coco_data.rst", "python coco_python.py")
    printed = run_tutorial("coco_python.py", cwd=tiny_shapes, tiny=True)
    assert [_shape_of(line) for line in printed] == [_shape_of(line) for line in shown]
    assert printed[0].startswith("trained 4 steps in ") and shown[0].startswith("trained 1200 steps in ")
    assert printed[1].split() == ["AP", "AP50", "AP75", "APs", "APm", "APl"]
    assert (tiny_shapes / "runs" / "cpu_python" / "checkpoint_last.pt").exists()


@pytest.mark.slow
def test_torchrun_tutorial_runs_two_gloo_processes_on_cpu(tiny_shapes) -> None:
    """torchrun_train.py under ``torchrun --standalone --nproc-per-node 2``, on CPUs."""
    from tutorial_pages import console_output, run_tutorial

    shown = console_output(
        "torchrun.rst",
        "FOCAL_DETECT_TUTORIAL_TINY=1 torchrun --standalone --nproc-per-node 2 torchrun_train.py",
    )
    printed = run_tutorial(
        "torchrun_train.py",
        cwd=tiny_shapes,
        tiny=True,
        launcher=("-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"),
    )
    assert [_shape_of(line) for line in printed] == [_shape_of(line) for line in shown]
    # Only process 0 prints; 2 processes x 2 images per step.
    assert printed == [printed[0]] and printed[0].startswith("2 process(es), 2 steps of 4 images")


def test_torchvision_tutorial_loss_matches_golden() -> None:
    """Recompute torchvision's RetinaNet loss from saved head outputs with focal-detect.

    tests/data/tutorial_tv_golden.json comes from tests/data/make_tutorial_tv_golden.py
    (torch 2.14.1, torchvision 0.29.1): the inputs torchvision's
    ``RetinaNet.compute_loss`` received for the tutorial's tiny model and batch, and its
    output. The two images have 8 and 5 foreground and 3 and 4 ignored anchors, so a
    per-batch instead of per-image normaliser, or ignored anchors counted as background,
    changes the numbers.
    """
    tutorial = load_module(DOCS / "tutorials" / "torchvision_retinanet.py")
    golden = json.loads((DATA / "tutorial_tv_golden.json").read_text())
    targets = [
        {
            "boxes": torch.tensor(t["boxes"], dtype=torch.float32),
            "labels": torch.tensor(t["labels"], dtype=torch.int64),
        }
        for t in golden["targets"]
    ]
    head_outputs = {
        "cls_logits": torch.tensor(golden["cls_logits"], dtype=torch.float32),
        "bbox_regression": torch.tensor(golden["bbox_regression"], dtype=torch.float32),
    }
    anchors = torch.tensor(golden["anchors"], dtype=torch.float32)
    ours = tutorial.retinanet_loss(targets, head_outputs, [anchors] * len(targets))
    for key, value in golden["torchvision_loss"].items():
        assert ours[key].item() == pytest.approx(value, rel=1e-5), key

    from focal_detect.matching import assign_anchors

    a = assign_anchors(
        anchors,
        [t["boxes"] for t in targets],
        [t["labels"] for t in targets],
        min_low_quality_iou=None,
        crowd_ioa_threshold=None,
    )
    assert a.foreground.sum(1).tolist() == golden["torchvision_num_foreground"]
    assert (a.labels == -2).sum(1).tolist() == golden["torchvision_num_ignored"]


def test_coco_tutorial_config_builds_the_configs_it_claims() -> None:
    if sys.version_info < (3, 11):
        pytest.importorskip("tomli")  # TOML reader before Python 3.11 (the train extra)
    from focal_detect.cli import load_config_file
    from focal_detect.engine import TrainConfig
    from focal_detect.models import RetinaNetConfig

    cfg = load_config_file(DOCS / "tutorials" / "retinanet.toml")
    assert set(cfg) == {"data", "model", "train"}
    train = TrainConfig.from_dict(cfg["train"])
    assert (train.iterations, train.batch_size, train.amp) == (90_000, 16, True)
    model = dict(cfg["model"])
    preset = model.pop("preset")
    assert preset == "paper" and model == {"transform": {"min_size": 600}}
    assert RetinaNetConfig.preset(preset, 5, **model).transform.min_size == 600


def test_coco_tutorial_cpu_config_is_the_demo_configuration() -> None:
    """retinanet_cpu.toml (the CPU route): the demo model and the demo's optimiser."""
    if sys.version_info < (3, 11):
        pytest.importorskip("tomli")
    from focal_detect.cli import DEMO_TRAIN, build_model, load_config_file
    from focal_detect.engine import TrainConfig
    from focal_detect.models import RetinaNetConfig

    cfg = load_config_file(DOCS / "tutorials" / "retinanet_cpu.toml")
    train = TrainConfig.from_dict(cfg["train"])
    assert (train.iterations, train.batch_size, train.amp) == (1200, 16, True)
    for key in (
        "optimizer",
        "lr",
        "weight_decay",
        "schedule",
        "warmup_factor",
        "clip_grad_norm",
        "batch_size",
    ):
        assert getattr(train, key) == DEMO_TRAIN[key], key
    model = dict(cfg["model"])
    assert model.pop("preset") == "demo" and not model
    assert build_model(5, "demo").config == RetinaNetConfig.preset("demo", 5)
    assert build_model(5, "demo").config.backbone.depth == 18


def test_coco_tutorial_bad_boxes_are_skipped_with_one_warning(tmp_path) -> None:
    pytest.importorskip("PIL")
    from focal_detect.data import CocoDetection, SyntheticShapes, export_coco

    annotations = Path(export_coco(SyntheticShapes(num_images=2, image_size=32, seed=0), tmp_path))
    data = json.loads(annotations.read_text())
    good = CocoDetection(tmp_path / "images", annotations)
    assert good.num_classes == 5 and good.num_skipped == 0
    bad = dict(data["annotations"][0], id=10_000, bbox=[3.0, 4.0, 0.0, 5.0])  # zero width
    data["annotations"].append(bad)
    annotations.write_text(json.dumps(data))
    with pytest.warns(UserWarning, match="10000"):
        skipped = CocoDetection(tmp_path / "images", annotations)
    assert skipped.num_skipped == 1 and len(skipped) == len(good)


# ----------------------------------------------------------------------------- figure


def test_figure1_curves_are_the_focal_loss() -> None:
    from focal_detect.losses import sigmoid_focal_loss

    script = load_module(DOCS / "_scripts" / "plot_figure1.py")
    x = torch.linspace(-6, 6, 61, dtype=torch.float64)
    p_t = torch.sigmoid(x)  # target 1: p_t = p
    for gamma in script.GAMMAS:
        ours = sigmoid_focal_loss(x, torch.ones_like(x), alpha=None, gamma=gamma)
        drawn = torch.from_numpy(script.focal_loss_of_pt(p_t.numpy(), gamma))
        torch.testing.assert_close(ours, drawn, rtol=1e-6, atol=1e-9)
    assert script.GAMMAS == (0.0, 0.5, 1.0, 2.0, 5.0)


def test_figure1_png_is_committed_and_regenerates(tmp_path) -> None:
    pytest.importorskip("matplotlib")
    committed = DOCS / "_static" / "figure1.png"
    assert committed.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    script = load_module(DOCS / "_scripts" / "plot_figure1.py")
    out = script.plot(tmp_path / "figure1.png")
    assert out.stat().st_size > 10_000


def test_intersphinx_inventories_match_their_generator(tmp_path, monkeypatch) -> None:
    script = load_module(DOCS / "_scripts" / "make_inventories.py")
    monkeypatch.setattr(script, "OUT", tmp_path)
    script.main()
    for name in ("python.inv", "torch.inv", "torchvision.inv"):
        assert (tmp_path / name).read_bytes() == (DOCS / "_intersphinx" / name).read_bytes(), (
            f"docs/_intersphinx/{name} is stale: run python docs/_scripts/make_inventories.py"
        )


# ------------------------------------------------------------------- external links

_INVENTORIES = ("python.inv", "torch.inv", "torchvision.inv")


def _external_links() -> ModuleType:
    return load_module(DOCS / "_ext" / "external_links.py")


def test_every_inventory_entry_is_an_anchor_on_a_page_of_that_inventory() -> None:
    """Read the committed inventories directly (not through their generator)."""
    ext = _external_links()
    for name in _INVENTORIES:
        entries = ext.read_inventory(DOCS / "_intersphinx" / name)
        pages = {uri for _, role, uri in entries if role == "std:doc"}
        objects = [(n, uri) for n, role, uri in entries if role != "std:doc"]
        assert len(pages) >= 5 and len(objects) >= 5, name
        for obj, uri in objects:
            page, _, fragment = uri.partition("#")
            assert fragment, f"{name}: {obj} -> {uri!r} has no #fragment"
            assert page in pages, f"{name}: {obj} -> {uri!r}: page not in the inventory"
    tensor = {n: u for n, _, u in ext.read_inventory(DOCS / "_intersphinx" / "torch.inv")}
    assert tensor["torch.Tensor"] == "tensors.html#torch.Tensor"


def _mini_site(tmp_path: Path, inventories: Path) -> Path:
    """A one-page Sphinx project referencing every object of the three inventories."""
    ext = _external_links()
    src = tmp_path / "src"
    src.mkdir(parents=True)
    bases = {
        "python": "https://docs.python.org/3",
        "torch": "https://docs.pytorch.org/docs/stable",
        "torchvision": "https://docs.pytorch.org/vision/stable",
    }
    mapping = {p: (bases[p], str(inventories / f"{p}.inv")) for p in bases}
    (src / "conf.py").write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(DOCS / '_ext')!r})\n"
        "extensions = ['sphinx.ext.intersphinx', 'external_links']\n"
        f"external_link_inventories = {mapping!r}\n"
        "intersphinx_mapping = dict(external_link_inventories)\n"
        "nitpicky = True\n"
    )
    lines = ["Links", "=====", ""]
    for project in bases:
        for name, role, _ in ext.read_inventory(inventories / f"{project}.inv"):
            if role.startswith("py:"):
                kind = {"exception": "exc", "function": "func"}.get(role[3:], role[3:])
                lines.append(f"* :py:{kind}:`{name}`")
    (src / "index.rst").write_text("\n".join(lines) + "\n")
    return src


def _build(src: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(src), str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_docs_build_fails_on_a_link_without_fragment_or_off_the_inventory_pages(
    tmp_path,
) -> None:
    """The -W build accepts the committed inventories and rejects broken link targets.

    The broken inventories are the committed ones with the old generator's defect
    (``page.html$``: the anchor glued to the page name) and with one page left out of
    the list of documents.
    """
    pytest.importorskip("sphinx")
    import shutil
    import zlib

    ok = _build(_mini_site(tmp_path / "ok", DOCS / "_intersphinx"), tmp_path / "ok" / "html")
    assert ok.returncode == 0, ok.stderr
    html = (tmp_path / "ok" / "html" / "index.html").read_text()
    assert 'href="https://docs.pytorch.org/docs/stable/tensors.html#torch.Tensor"' in html

    def broken(kind: str) -> Path:
        folder = tmp_path / kind / "inv"
        folder.mkdir(parents=True)
        for name in _INVENTORIES:
            shutil.copy(DOCS / "_intersphinx" / name, folder / name)
        raw = (folder / "torch.inv").read_bytes()
        head, body = raw.split(b"\n", 4)[:4], raw.split(b"\n", 4)[4]
        text = zlib.decompress(body).decode()
        if kind == "no-fragment":
            text = text.replace("tensors.html#$", "tensors.html$")
        else:
            text = "".join(
                line + "\n" for line in text.splitlines() if not line.startswith("tensors std:doc")
            )
        (folder / "torch.inv").write_bytes(b"\n".join(head) + b"\n" + zlib.compress(text.encode()))
        return folder

    for kind, message in (("no-fragment", "has no #fragment"), ("no-page", "a page not in the inventory")):
        src = _mini_site(tmp_path / kind, broken(kind))
        result = _build(src, tmp_path / kind / "html")
        assert result.returncode != 0, kind
        assert message in result.stderr and "tensors.html" in result.stderr, result.stderr


# --------------------------------------------------------------------------- versions

_VERSION = re.compile(r"\b(torch|torchvision)(?:==| )(\d+\.\d{1,2}(?:\.\d+)?)\b")


def test_quoted_torch_versions_are_the_tested_with_list() -> None:
    """README.md and every page quote only the versions of conf.py's TESTED_WITH."""
    conf = (DOCS / "conf.py").read_text()
    tested = dict(re.findall(r'"(\w+_version)": "([\d.]+)"', conf))
    allowed = {
        ("torch", tested["torch_version"]),
        ("torch", tested["peer_torch_version"]),
        ("torchvision", tested["peer_torchvision_version"]),
    }
    files = [
        ROOT / "README.md",
        *sorted(DOCS.rglob("*.rst")),
        *sorted(DOCS.rglob("*.toml")),
        *sorted((DOCS / "tutorials").glob("*.py")),
    ]
    quoted = {(f.name, m) for f in files for m in _VERSION.findall(f.read_text())}
    assert quoted, "no version quoted anywhere"
    wrong = sorted(q for q in quoted if q[1] not in allowed)
    assert not wrong, f"versions outside docs/conf.py TESTED_WITH: {wrong}"
    readme = (ROOT / "README.md").read_text()
    assert f"torch=={tested['torch_version']}" in readme
    tv_page = (DOCS / "tutorials" / "torchvision_retinanet.rst").read_text()
    assert (
        f"torch=={tested['peer_torch_version']} torchvision=={tested['peer_torchvision_version']}"
    ) in tv_page


# ------------------------------------------------------------------------ API polish


def _conf() -> ModuleType:
    pytest.importorskip("sphinx")
    return load_module(DOCS / "conf.py")


def test_signature_defaults_keep_the_parentheses_precedence_needs() -> None:
    """AnchorGenerator's scales default must read 2 ** (1 / 3), not 2**1 / 3 (= 0.67)."""
    from sphinx.util.inspect import signature_from_str

    _conf()._unparse_binop_with_parentheses()
    sig = signature_from_str("(scales=(1.0, 2 ** (1 / 3), 2 ** (2 / 3)), x=(1 - 2) * 3, y=2 ** 3 ** 2)")
    defaults = [str(p.default) for p in sig.parameters.values()]
    assert defaults == ["(1.0, 2 ** (1 / 3), 2 ** (2 / 3))", "(1 - 2) * 3", "2 ** 3 ** 2"]
    assert eval(defaults[0]) == (1.0, 2 ** (1 / 3), 2 ** (2 / 3))  # our own literal


def test_api_pages_leave_out_torch_printing_hooks_and_keep_constant_summaries() -> None:
    conf = _conf()
    from focal_detect.coding import BoxCoder

    assert conf._skip_module_hooks(None, "class", "extra_repr", BoxCoder.extra_repr, False, {})
    assert conf._skip_module_hooks(None, "class", "encode", BoxCoder.encode, False, {}) is None
    # A constant's "#:" prose survives napoleon (which runs between the two hooks) and
    # keeps its first line, the summary of the autosummary table.
    from sphinx.ext.napoleon import Config, GoogleDocstring

    original = ["Anchor matched to no object: every class is a negative.", ""]
    lines = list(original)
    conf._save_data_docs(None, "data", "focal_detect.BACKGROUND", -1, {}, lines)
    lines[:] = GoogleDocstring(lines, Config(), what="data", name="BACKGROUND").lines()
    assert lines != original  # napoleon alone turns the first line into a type
    conf._restore_data_docs(None, "data", "focal_detect.BACKGROUND", -1, {}, lines)
    assert lines == original


# Functions that take tensors but no shaped ones (state dicts of weights).
_NO_SHAPE_SECTION = {"convert_torchvision_retinanet", "load_resnet_state_dict", "load_torchvision_retinanet"}


def test_every_public_function_taking_tensors_has_a_shape_section() -> None:
    import inspect
    import typing

    missing, seen = [], 0
    for module_name in _public_modules():
        module = importlib.import_module(module_name)
        for name in _public(module_name):
            obj = getattr(module, name)
            if not inspect.isfunction(obj) or name in _NO_SHAPE_SECTION:
                continue
            hints = typing.get_type_hints(obj)
            if any("Tensor" in str(v) for k, v in hints.items() if k != "return"):
                seen += 1
                doc = inspect.getdoc(obj) or ""
                section = doc.split("\nShape:\n", 1)[1].split("\n\n", 1)[0] if ("\nShape:\n" in doc) else ""
                tensors = [
                    k
                    for k, v in hints.items()
                    if k != "return" and "Tensor" in str(v) and "dict" not in str(v)
                ]
                if not section or any(f"{t}:" not in section for t in tensors):
                    missing.append(f"{module_name}.{name}")
    assert seen >= 20
    assert not missing, f"no 'Shape:' section naming each tensor argument: {sorted(set(missing))}"


# Documented methods of public classes that take tensors and show a Shape: section.
_METHODS_WITH_SHAPES = [
    ("focal_detect.losses", "FocalLossNormalizer", "forward"),
    ("focal_detect.coding", "BoxCoder", "encode"),
    ("focal_detect.coding", "BoxCoder", "decode"),
    ("focal_detect.coding", "BoxCoder", "forward"),
    ("focal_detect.matching", "Matcher", "__call__"),
    ("focal_detect.matching", "AnchorAssigner", "__call__"),
    ("focal_detect.models", "FPN", "forward"),
    ("focal_detect.models", "ResNet", "forward"),
    ("focal_detect.models", "RetinaNetHead", "forward"),
    ("focal_detect.models", "RetinaNetHead", "forward_levels"),
    ("focal_detect.models", "RetinaNet", "forward"),
]


@pytest.mark.parametrize(("module_name", "cls", "method"), _METHODS_WITH_SHAPES)
def test_tensor_methods_have_a_shape_section(module_name: str, cls: str, method: str) -> None:
    import inspect

    doc = inspect.getdoc(getattr(getattr(importlib.import_module(module_name), cls), method))
    assert doc and "\nShape:\n" in doc, f"{cls}.{method}"
    section = doc.split("\nShape:\n", 1)[1]
    assert "output:" in section.split("\n\n", 1)[0], f"{cls}.{method}: no output shape"
