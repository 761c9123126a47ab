"""Importing the package must stay light: no model code, no optional dependencies."""

from __future__ import annotations

import subprocess
import sys


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys; print('\\n'.join(sorted(sys.modules)))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return set(out.split())


def test_import_package_does_not_load_models_or_optional_deps() -> None:
    mods = _modules_after("import focal_detect")
    assert "focal_detect" in mods
    loaded = {m for m in mods if m.startswith("focal_detect.models")}
    assert not loaded, f"import focal_detect loaded model code: {sorted(loaded)}"
    # (tqdm is not checked: torch itself imports it.)
    for heavy in ("torchvision", "matplotlib", "pycocotools", "PIL"):
        assert heavy not in mods, f"import focal_detect loaded {heavy}"


def test_label_codes_match_matcher_codes() -> None:
    import focal_detect

    # torchvision's Matcher: BELOW_LOW_THRESHOLD = -1, BETWEEN_THRESHOLDS = -2.
    assert focal_detect.BACKGROUND == -1
    assert focal_detect.IGNORE == -2


def test_top_level_reexports_every_public_name_of_the_ops_modules() -> None:
    import importlib

    import focal_detect

    for name in (
        "constants",
        "losses",
        "init",
        "boxes",
        "coding",
        "anchors",
        "matching",
        "sampling",
        "analysis",
    ):
        mod = importlib.import_module(f"focal_detect.{name}")
        for public in mod.__all__:
            assert getattr(focal_detect, public) is getattr(mod, public), (name, public)
            assert public in focal_detect.__all__, (name, public)
