"""The package's shape, as docs/explanations/architecture.rst states it.

Static checks on the source (nothing is imported): the one-way import rule, the size
limits of files and functions, and that the architecture page names every module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "focal_detect"
PAGE = ROOT / "docs" / "explanations" / "architecture.rst"

#: The ops layer: plain-tensor pieces of the paper. They may import each other and
#: torch, never the model, data, training or command-line layers.
OPS = (
    "constants",
    "_checks",
    "boxes",
    "coding",
    "anchors",
    "matching",
    "losses",
    "init",
    "sampling",
    "analysis",
)
UPPER = ("models", "data", "engine", "evaluation", "cli")

MAX_FILE_LINES = 700
MAX_FUNCTION_LINES = 80
#: Documented numeric kernels allowed to be longer (qualified names).
LONG_KERNELS: frozenset[str] = frozenset()


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        out[".".join(("focal_detect", *parts))] = path
    return out


def _imports(path: Path, module: str) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.add(name)
            found.update(f"{name}.{a.name}" for a in node.names)
    return {m for m in found if m == "focal_detect" or m.startswith("focal_detect.")}


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


@pytest.mark.parametrize("module", [m for m in _modules() if _layer(m) in OPS])
def test_ops_never_import_models_data_engine_or_cli(module: str) -> None:
    path = _modules()[module]
    bad = sorted(m for m in _imports(path, module) if _layer(m) in UPPER)
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}: the ops layer must not depend on {UPPER}"


def test_ops_do_not_import_the_top_level_package() -> None:
    # `from focal_detect import x` inside an op would load every op (and cycles).
    for module, path in _modules().items():
        if _layer(module) in OPS:
            assert "focal_detect" not in _imports(path, module), path


@pytest.mark.parametrize("module", sorted(_modules()))
def test_source_files_stay_small(module: str) -> None:
    path = _modules()[module]
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_FILE_LINES, f"{path.relative_to(ROOT)} has {lines} lines (limit {MAX_FILE_LINES})"


def _functions(tree: ast.AST, prefix: str = ""):  # type: ignore[no-untyped-def]
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            name = f"{prefix}{node.name}"
            yield name, node
            yield from _functions(node, name + ".")
        elif isinstance(node, ast.ClassDef):
            yield from _functions(node, f"{prefix}{node.name}.")


def _body_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines of the function without its docstring."""
    body = node.body
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
        body = body[1:]
    if not body:
        return 0
    return (body[-1].end_lineno or body[-1].lineno) - body[0].lineno + 1


def test_functions_stay_short() -> None:
    long = []
    for module, path in _modules().items():
        for name, node in _functions(ast.parse(path.read_text(encoding="utf-8"))):
            n = _body_lines(node)
            if n > MAX_FUNCTION_LINES and f"{module}.{name}" not in LONG_KERNELS:
                long.append(f"{module}.{name} ({n} lines)")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines (docstring excluded): {long}"


def test_architecture_page_names_every_module() -> None:
    text = PAGE.read_text(encoding="utf-8")
    missing = [m for m in _modules() if m.split(".")[-1] != "_checks" and f"``{m}``" not in text]
    assert not missing, f"{PAGE.name} does not describe {missing}"
