"""The package's layout is its architecture: these tests hold the code to the dependency rule
written in README.md ("How the code is organised").

Every import counts, also those inside functions and under ``TYPE_CHECKING``: a lazy import is
still a dependency. Modules are found by walking ``imgvec/``; imports are read with ``ast``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "imgvec"

LAYERS: dict[str, int] = {
    "__main__": 7,
    "cli": 6,
    "serve": 6,
    "tools": 6,
    "api": 5,
    "ops": 4,
    "embed": 3,
    "index": 3,
    "decode": 2,
    "storage": 2,
    "scan": 1,
    "types": 0,
    "errors": 0,
    "config": 0,
    "reporting": 0,
    "atomic": 0,
}
"""Each part of the package and its layer: a part may import the parts of lower layers (and its
own modules), never those of its own layer or above, with the exceptions below."""
ALSO_ALLOWED = {("cli", "tools"), ("cli", "serve")}
"""Same-layer imports that the rule allows: the CLI renders what the tools produce, and starts
the server."""
CLI_MAY_IMPORT = {"api", "tools", "serve", "types", "errors", "config", "reporting", "cli"}
"""The command line is a thin layer: it parses, makes one call of the API, renders."""
CLI_ALSO_CALLS = {"imgvec.ops.cold_query"}
"""Besides the API, the CLI calls the cold query, whose point is to answer without importing
the API (SQLAlchemy's import is a third of a one-photo query)."""
SERVE_MAY_IMPORT = {"api", "types", "errors", "config", "reporting", "serve"}
"""So is the server: each endpoint is one call of the API."""


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path, known: set[str]) -> set[str]:
    """The imgvec modules a file imports (``from imgvec.x import y`` names y when y is a module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("imgvec"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if not node.module.startswith("imgvec"):
                continue
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in known else node.module)
    return found


def part(module: str) -> str:
    """``imgvec.index.rules`` -> ``index``; the package face ``imgvec`` -> ``__init__``."""
    pieces = module.split(".")
    if len(pieces) == 1:
        return "__init__"
    return "storage" if pieces[1] == "migrations" else pieces[1]  # Alembic's scripts


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found) | {"imgvec.migrations"}  # Alembic's folder, packaged as imgvec.migrations
    return {name: imports(path, known) for name, path in found.items()}


def test_every_part_has_a_layer() -> None:
    missing = {part(m) for m in modules()} - set(LAYERS) - {"__init__"}
    assert not missing, f"parts with no layer in the rule: {sorted(missing)}"


def layer_violations(edges: dict[str, set[str]]) -> list[str]:
    violations = []
    for importer, imported in sorted(edges.items()):
        source = part(importer)
        if source == "__init__":
            continue  # the package face re-exports the API, lazily
        for target_module in sorted(imported):
            target = part(target_module)
            if target == source or (source, target) in ALSO_ALLOWED:
                continue
            if target == "__init__" or LAYERS[target] >= LAYERS[source]:
                violations.append(f"{importer} -> {target_module}")
            elif source == "cli" and target not in CLI_MAY_IMPORT:
                if target_module in CLI_ALSO_CALLS:
                    continue
                violations.append(f"{importer} -> {target_module} (the CLI goes through the API)")
            elif source == "serve" and target not in SERVE_MAY_IMPORT:
                violations.append(f"{importer} -> {target_module} (the server uses the API)")
    return violations


def test_no_layer_violation() -> None:
    assert layer_violations(graph()) == []


def test_the_layer_check_can_fail() -> None:
    edges = {
        "imgvec.storage.store": {"imgvec.api"},
        "imgvec.cli.app": {"imgvec.storage.store"},
        "imgvec.serve.app": {"imgvec.index.search"},
    }
    assert len(layer_violations(edges)) == 3


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles() -> None:
    assert cycles(graph()) == []


def test_the_cycle_check_can_fail() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    return {name.split(".")[0] for name in result.stdout.split()}


HEAVY = {"sqlalchemy", "alembic", "PIL", "torch", "torchvision", "faiss", "rich", "typer"}


@pytest.mark.parametrize(
    "statement",
    ["import imgvec.index.rules", "import imgvec", "from imgvec.errors import ImgvecError"],
)
def test_light_modules_load_nothing_heavy(statement: str) -> None:
    assert loaded_after(statement) & HEAVY == set()


def test_the_face_gives_the_api_on_first_use() -> None:
    assert "sqlalchemy" in loaded_after("import imgvec; imgvec.Library")


def test_the_columns_copied_between_same_content_rows_are_the_exif_ones() -> None:
    from imgvec.decode.exif import METADATA_COLUMNS
    from imgvec.storage.store import PICTURE_COLUMNS

    assert set(PICTURE_COLUMNS) == {
        "width",
        "height",
        "format",
        "metadata_at",
        "phash",
        *METADATA_COLUMNS,
    }
