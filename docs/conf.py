"""Sphinx configuration for focal-detect.

The build is offline and fast:

* MathJax 3 is shipped in ``_static/mathjax/`` (no CDN);
* intersphinx reads small hand-made inventories from ``_intersphinx/`` (regenerate
  them with ``python docs/_scripts/make_inventories.py``); links still point at the
  online Python and PyTorch documentation;
* Figure 1 is a committed PNG; ``docs/_scripts/plot_figure1.py`` regenerates it. The
  build only runs that script when the PNG is missing.

``nitpicky = True``: a reference to a name of *ours* that does not exist fails the
``-W`` build. Only external (Python, PyTorch, NumPy) names that our inventories do not
list are ignored, through ``nitpick_ignore_regex``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
# Use the checkout's sources even when the package is not installed editable.
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(DOCS / "_ext"))

import focal_detect  # noqa: E402

# -- Project -----------------------------------------------------------------------

project = "focal-detect"
author = "focal-detect developers"
copyright = "focal-detect developers"
release = focal_detect.__version__
version = ".".join(release.split(".")[:2])

# The versions the documentation quotes ("Tested with" on the start page). Every
# ``torch==X`` / ``torch X.Y.Z`` / ``torchvision X.Y.Z`` in README.md and the pages must
# be one of these (tests/test_docs.py checks it).
TESTED_WITH = {
    "torch_version": "2.13.0",  # the CPU build of the test suite, doctests and tutorials
    "peer_torch_version": "2.14.1",  # the pair torchvision is tested with ...
    "peer_torchvision_version": "0.29.1",  # ... (torchvision is built against one torch)
}
rst_prolog = "\n".join(f".. |{key}| replace:: {value}" for key, value in TESTED_WITH.items())

# -- General -----------------------------------------------------------------------

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.intersphinx",
    "sphinx.ext.doctest",
    "sphinx.ext.viewcode",
    "external_links",  # docs/_ext: links into the inventories below must be page#anchor
]

exclude_patterns = ["_build", "_scripts", "_ext", "_intersphinx", "Thumbs.db", ".DS_Store"]
templates_path = ["_templates"]
default_role = "py:obj"
pygments_style = "sphinx"
pygments_dark_style = "monokai"

# Broken cross-references to our own names fail the -W build.
nitpicky = True
nitpick_ignore_regex = [
    # External names our small inventories do not list (no network at build time).
    (
        r"py:.*",
        r"(torch|torchvision|numpy|np|typing|typing_extensions|collections|"
        r"collections\.abc|dataclasses|enum|abc|os|pathlib|io|contextlib)\..*",
    ),
    (
        r"py:.*",
        r"(Tensor|Module|Parameter|Generator|Dataset|DataLoader|Sampler|"
        r"Optimizer|ndarray|Path|PathLike|Self|Any|Callable|Iterable|Iterator|"
        r"Sequence|Mapping|MutableMapping|Literal|NamedTuple|TypeVar|Union|"
        r"Optional|ClassVar|Final|TypeAlias|ParamSpec)",
    ),
    # Builtin types that appear in signatures and "Returns:" sections.
    (
        r"py:.*",
        r"(int|float|bool|str|bytes|tuple|list|dict|set|frozenset|object|type|"
        r"slice|complex|None|NoneType|Ellipsis|NotImplemented|"
        r"ValueError|TypeError|RuntimeError|KeyError|IndexError)",
    ),
    # Words napoleon turns into references in "Args:" sections: "optional", "default".
    (r"py:.*", r"(optional|default|callable|array_like|tensor|scalar)"),
]

# Private helpers named in public docstrings would go here (none: use a plain
# ``literal`` in the docstring instead).
nitpick_ignore: list[tuple[str, str]] = []

# -- autodoc / autosummary / napoleon ----------------------------------------------

autosummary_generate = False  # API pages list names explicitly (each exactly once).
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
autodoc_default_options: dict[str, object] = {}
autoclass_content = "class"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_param = True
napoleon_preprocess_types = False
# "Shape:" sections list each tensor argument's shape (and the output's), like "Args:".
napoleon_custom_sections = [("Shape", "params_style")]
napoleon_attr_annotations = False  # "list[dict[str, float]]" would be split at the comma
python_use_unqualified_type_names = True
add_module_names = False

# -- intersphinx (offline: local inventories, online link targets) -----------------

external_link_inventories = {
    "python": ("https://docs.python.org/3", str(DOCS / "_intersphinx" / "python.inv")),
    "torch": ("https://docs.pytorch.org/docs/stable", str(DOCS / "_intersphinx" / "torch.inv")),
    "torchvision": (
        "https://docs.pytorch.org/vision/stable",
        str(DOCS / "_intersphinx" / "torchvision.inv"),
    ),
}
intersphinx_mapping = dict(external_link_inventories)
intersphinx_timeout = 1

# -- doctest (``sphinx -b doctest docs`` runs ``.. doctest::`` blocks in the pages) -

doctest_global_setup = """
import math
import torch
from torch import nn
torch.manual_seed(0)
from focal_detect import *
from focal_detect.anchors import *
from focal_detect.boxes import *
from focal_detect.coding import *
from focal_detect.constants import *
from focal_detect.init import *
from focal_detect.losses import *
from focal_detect.matching import *
from focal_detect.sampling import *
from focal_detect.data import *
from focal_detect.models import *
from focal_detect.models.backbone import *
from focal_detect.models.retinanet import *
from focal_detect.engine import *
from focal_detect.evaluation import *
from focal_detect.cli import *
"""

# -- Math: MathJax 3 shipped locally -----------------------------------------------

mathjax_path = "mathjax/tex-chtml.js"
mathjax3_config = {
    "loader": {"load": []},
    "tex": {"macros": {"FL": r"\mathrm{FL}", "CE": r"\mathrm{CE}"}},
    "options": {"enableMenu": False},
}

# -- HTML --------------------------------------------------------------------------

html_theme = "furo"
html_title = f"focal-detect {release}"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_js_files = ["search-math.js"]  # search excerpts: formulas as text, not raw TeX
html_show_sourcelink = False
html_theme_options = {
    "sidebar_hide_name": False,
    "navigation_with_keys": True,
}


# -- Figure 1 ----------------------------------------------------------------------


def _ensure_figure1(app) -> None:
    """Regenerate the committed Figure 1 only when it is missing (keeps builds fast)."""
    png = DOCS / "_static" / "figure1.png"
    if png.exists() and not os.environ.get("FOCAL_DETECT_REGENERATE_FIGURES"):
        return
    subprocess.run(
        [sys.executable, str(DOCS / "_scripts" / "plot_figure1.py"), str(png)],
        check=True,
    )


_PROSE_DOCS: dict[str, list[str]] = {}


def _save_data_docs(app, what, name, obj, options, lines) -> None:
    """Keep napoleon away from ``#:`` docs of constants and attributes (1 of 2).

    napoleon reads the first line of a data/attribute docstring as an inline
    ``type: description`` ("Anchor matched to no object: every class ..." would become
    a type), and our constants are documented in prose. This hook runs before napoleon
    (lower priority number) and saves the lines; ``_restore_data_docs`` runs after it and
    puts them back, so the page and the autosummary tables show the prose as written.
    """
    if what in ("data", "attribute"):
        _PROSE_DOCS[name] = list(lines)


def _restore_data_docs(app, what, name, obj, options, lines) -> None:
    """Put back what ``_save_data_docs`` saved (2 of 2; runs after napoleon)."""
    if what in ("data", "attribute") and name in _PROSE_DOCS:
        lines[:] = _PROSE_DOCS.pop(name)


# -- Re-exported names ---------------------------------------------------------------
# Names are documented once, where users import them from (``focal_detect.data``,
# ``focal_detect.models``); docstrings may refer to the same object through another
# path (``focal_detect.models.retinanet.RetinaNetConfig``, ``AnchorGenerator`` imported
# into a module). When a Python reference is not found, resolve its target by import
# and, if that object is documented under some name, link there. Targets that do not
# import, or objects documented nowhere, stay broken and fail the -W build.


def _lookup(path: str) -> object | None:
    """The object at a dotted path (module part imported, the rest read statically)."""
    import importlib
    import inspect

    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:i]))
        except Exception:
            continue
        try:
            for attr in parts[i:]:
                obj = inspect.getattr_static(obj, attr)
        except AttributeError:
            return None
        return obj
    return None


def _documented_by_object(env) -> dict[tuple[str, int], str]:
    cache = getattr(env, "_focal_detect_documented", None)
    if cache is None:
        cache = {}
        for name in env.get_domain("py").objects:
            if name.startswith("focal_detect"):
                obj = _lookup(name)
                if obj is not None:
                    cache.setdefault((name.rsplit(".", 1)[-1], id(obj)), name)
        env._focal_detect_documented = cache
    return cache


def _resolve_reexport(app, env, node, contnode):
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "").lstrip("~.")
    module = node.get("py:module") or ""
    cls = node.get("py:class") or ""
    bases = [f"{module}.{cls}"] if cls else []
    owner = _lookup(f"{module}.{cls}") if cls else None
    home = getattr(owner, "__module__", None)  # where a re-exported class is defined
    bases += [module] + ([f"{home}.{cls}", home] if home and home != module else []) + [""]
    documented = _documented_by_object(env)
    for base in bases:
        path = f"{base}.{target}" if base else target
        obj = _lookup(path)
        if obj is None:
            continue
        name = documented.get((target.rsplit(".", 1)[-1], id(obj)))
        if name is not None:
            return env.get_domain("py").resolve_xref(
                env, node["refdoc"], app.builder, node["reftype"], name, node, contnode
            )
    # A field of a documented dataclass (``TrainConfig.resume``) has no entry of its
    # own: its description is in the class's "Args"; link to the class.
    if node.get("reftype") == "attr" and "." in target:
        owner_path, field_name = target.rsplit(".", 1)
        for base in bases:
            owner = _lookup(f"{base}.{owner_path}" if base else owner_path)
            fields = getattr(owner, "__dataclass_fields__", {})
            name = documented.get((owner_path.rsplit(".", 1)[-1], id(owner)))
            if field_name in fields and name is not None:
                return env.get_domain("py").resolve_xref(
                    env, node["refdoc"], app.builder, "class", name, node, contnode
                )
    return None


def _parsable_signature(app, what, name, obj, options, signature, return_annotation):
    """Dataclass fields with ``default_factory`` show as ``= <factory>``, which Sphinx
    cannot parse (it then splits ``list[dict[str, float]]`` at the comma); show ``...``."""
    if signature and "<factory>" in signature:
        return signature.replace("<factory>", "..."), return_annotation
    return None


# Methods every torch.nn.Module overrides for printing: autodoc would publish PyTorch's
# stock docstring for them ("Set the extra representation of the module ...").
_SKIPPED_MODULE_HOOKS = frozenset({"extra_repr"})


def _skip_module_hooks(app, what, name, obj, skip, options):
    """Leave ``extra_repr`` (a printing hook, not API) out of the class pages."""
    if what == "class" and name in _SKIPPED_MODULE_HOOKS:
        return True
    return None


def _unparse_binop_with_parentheses() -> None:
    """Render ``2 ** (1 / 3)`` in a signature as written, not as ``2**1 / 3``.

    Sphinx re-parses each signature and prints a default's binary operations without
    the parentheses precedence needs (``AnchorGenerator``'s ``scales`` default read as
    0.67 instead of 1.26). Python's own ``ast.unparse`` keeps them.
    """
    import ast

    from sphinx.pycode import ast as sphinx_ast

    sphinx_ast._UnparseVisitor.visit_BinOp = lambda self, node: ast.unparse(node)


def setup(app) -> None:
    _unparse_binop_with_parentheses()
    app.connect("builder-inited", _ensure_figure1)
    app.connect("autodoc-process-docstring", _save_data_docs, priority=100)
    app.connect("autodoc-process-docstring", _restore_data_docs, priority=900)
    app.connect("missing-reference", _resolve_reexport)
    app.connect("autodoc-process-signature", _parsable_signature)
    app.connect("autodoc-skip-member", _skip_module_hooks)
