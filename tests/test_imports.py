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


def test_top_level_names_are_their_modules_own_public_names() -> None:
    import importlib

    import focal_detect

    homes = [
        importlib.import_module(f"focal_detect.{m}")
        for m in ("constants", "losses", "init", "boxes", "coding", "anchors", "matching")
    ]
    for public in focal_detect.__all__:
        if public == "__version__":
            continue
        owners = [m for m in homes if public in m.__all__]
        assert len(owners) == 1, (public, [m.__name__ for m in owners])
        assert getattr(focal_detect, public) is getattr(owners[0], public), public


def test_every_ops_module_lists_its_public_names() -> None:
    import importlib

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
        assert mod.__all__, name
        for public in mod.__all__:
            assert hasattr(mod, public), (name, public)


def test_names_moved_off_the_top_level_still_resolve_with_a_warning() -> None:
    import importlib

    import pytest

    import focal_detect

    assert "ohem_sample" not in focal_detect.__all__ and "focal_loss_cdf" not in focal_detect.__all__
    for name, module in focal_detect.MOVED.items():
        with pytest.warns(DeprecationWarning, match=rf"focal_detect.{name} moved to {module}.{name}"):
            value = getattr(focal_detect, name)
        assert value is getattr(importlib.import_module(module), name)
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        focal_detect.no_such_name  # noqa: B018
