"""The house rules of the code (ARCHITECTURE.md): imports go one way, core <- data <- train <- evaluate <-
registry, report <- flows <- the command line; no import cycle; no module imports another's private names; no
module in flows/ or tasks/ over 400 lines."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from conftest import ROOT

# lower layers never import higher ones; the same layer may import itself
LAYERS = {"tasks.core": 0, "tasks.data": 1, "tasks.train": 2, "tasks.evaluate": 3, "tasks.registry": 4,
          "tasks.report": 4, "tasks.drift": 4, "tasks.serve": 4, "flows": 5, "flows.cli": 6}
PACKAGES = ("tasks", "flows")


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def imports(path: Path, known: dict[str, Path]) -> list[tuple[str, list[str]]]:
    """(module imported, names taken from it) for every import in the file, at any depth (a function's lazy
    import counts too); ``from package import module`` resolves to the module."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names if a.name.split(".")[0] in PACKAGES]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            if node.module.split(".")[0] not in PACKAGES:
                continue
            names = []
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                if sub in known:
                    found.append((sub, []))
                else:
                    names.append(a.name)
            if names:
                found.append((node.module, names))
    return found


def layer(module: str) -> int | None:
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len, default=None)
    return LAYERS[best] if best else None


def graph() -> dict[str, set[str]]:
    known = modules()
    return {m: {target for target, _ in imports(p, known) if target in known and target != m} for m, p in known.items()}


def test_every_module_is_in_a_layer():
    assert [m for m in modules() if layer(m) is None and m not in PACKAGES] == []


def test_imports_go_one_way():
    upward = [f"{m} -> {t}" for m, targets in graph().items() for t in targets
              if layer(m) is not None and layer(t) is not None and layer(t) > layer(m)]
    assert upward == []


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every back edge of a depth-first walk, as the cycle it closes."""
    state: dict[str, int] = {}
    found: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                found.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for start in sorted(edges):
        if start not in state:
            visit(start, [start])
    return found


def test_the_walk_finds_cycles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle():
    assert cycles(graph()) == []


def test_no_module_imports_another_modules_private_names():
    known = modules()
    private = [f"{m} imports {name} from {target}" for m, p in known.items() for target, names in imports(p, known)
               for name in names if name.startswith("_") and not name.startswith("__")]
    assert private == []


MAX_LINES = 400


def test_no_module_grows_past_the_limit():
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in modules().values()}
    over = {path: n for path, n in sizes.items() if n > MAX_LINES}
    assert over == {}, f"split these modules (at most {MAX_LINES} lines): {over}"


def test_architecture_md_names_only_packages_that_exist():
    """ARCHITECTURE.md's module map is true to the code: every package and module path it names exists, and
    every stage package exists in it."""
    text = (ROOT / "ARCHITECTURE.md").read_text()
    named = set(re.findall(r"`((?:tasks|flows)/[\w/]+(?:\.py)?)`", text))
    assert named and [n for n in named if not (ROOT / n).exists()] == []
    packages = {str(p.parent.relative_to(ROOT)) for p in (ROOT / "tasks").glob("*/__init__.py")}
    assert packages <= {n.rstrip("/") for n in named}, packages - named
