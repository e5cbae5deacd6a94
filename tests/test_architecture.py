"""The shape of the code: the import graph of greencode/, tui/ and train/ has no cycle, and the
dependencies point one way (tui -> greencode, train -> greencode; tui and train never meet)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("greencode", "tui", "train")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _lazy_import(node: ast.AST) -> str | None:
    """An import the interpreter does at run time: `importlib.import_module("pkg.mod")`, or a mount spec
    string "pkg.mod:attribute" (greencode/mount.py) naming a module of this project."""
    if (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
            and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
        return node.args[0].value
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        module, colon, attribute = node.value.partition(":")
        if colon and attribute.isidentifier() and module.split(".")[0] in PACKAGES:
            return module
    return None


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports anywhere (top level or inside a function)."""
    files = [p for package in PACKAGES for p in (ROOT / package).rglob("*.py") if "examples" not in p.parts]
    modules = {_module_name(p): p for p in files}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            elif lazy := _lazy_import(node):
                found = [lazy]
            else:
                continue
            targets |= {f for f in found if f in modules and f != name}
        graph[name] = targets
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 on the path, 2 done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [node, nxt] if nxt in path else [node, nxt]
            if nxt not in state and (found := visit(nxt, path + [node])):
                return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [])):
            return found
    return None


def test_the_import_graph_has_no_cycle():
    assert _cycle(import_graph()) is None


ROOT_MOUNTS = {("greencode.cli", "tui.cli"), ("greencode.cli", "train.cli")}  # the root mounts the front ends, nothing more


def test_dependencies_point_one_way():
    for module, targets in import_graph().items():
        top = module.split(".")[0]
        for target in targets:
            other = target.split(".")[0]
            assert not (top == "greencode" and other in ("tui", "train")) or (module, target) in ROOT_MOUNTS, \
                f"{module} imports {target}"
            assert not (top == "tui" and other == "train") and not (top == "train" and other == "tui"), \
                f"{module} imports {target}"


def test_mounts_are_imports_of_the_graph():
    """The root reaches every front end through a mount string; a command importing the root back would be a loop."""
    graph = import_graph()
    assert {"greencode.commands.serve", "tui.cli", "train.cli"} <= graph["greencode.cli"]
    assert "train.commands.agent" in graph["train.cli"]
    for module, targets in graph.items():
        assert "greencode.cli" not in targets, f"{module} imports the CLI root; take the config helper from greencode.context"


def test_lazy_imports_are_seen():
    tree = ast.parse('import importlib\nimportlib.import_module("greencode.cli")\nSPEC = "tui.cli:tui"\nNOTE = "see: this"')
    assert [found for node in ast.walk(tree) if (found := _lazy_import(node))] == ["greencode.cli", "tui.cli"]


def test_the_cycle_finder_finds_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) is not None
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_code_cites_sections_that_exist_in_docs_architecture():
    import re

    headings = set(re.findall(r"^## (.+)$", (ROOT / "docs" / "architecture.md").read_text(), flags=re.M))
    cited = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            cited |= set(re.findall(r"docs/architecture\.md ['\"]([^'\"]+)['\"]", path.read_text()))
    assert cited and cited <= headings, cited - headings


MAX_LINES = 430  # "small modules (<= ~400 lines)": split by concern before a file becomes a drawer
TO_SPLIT: set[str] = set()  # modules allowed past MAX_LINES while being split (none now)


def test_no_module_is_a_drawer():
    long = {str(path.relative_to(ROOT)): n for package in PACKAGES for path in (ROOT / package).rglob("*.py")
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert set(long) <= TO_SPLIT, long
