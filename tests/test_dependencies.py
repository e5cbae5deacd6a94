"""pyproject.toml lists exactly the third-party packages greencode/, tui/ and train/ import (and the test
extras what tests/ import): nothing missing from a fresh install, nothing installed for nothing."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
OURS = {"greencode", "tui", "train", "tests"}
# import name -> distribution name, where they differ
DISTRIBUTIONS = {"zeus": "zeus-ml", "rouge_score": "rouge-score", "tree_sitter": "tree-sitter",
                 "stable_baselines3": "stable-baselines3", "yaml": "pyyaml", "huggingface_hub": "huggingface-hub"}
NOT_IMPORTED = {"accelerate", "tree-sitter-python", "tree-sitter-java", "pytest-asyncio", "pytest-textual-snapshot",
                "pytest-timeout", "pytest-xdist"}  # needed at run time through another package, or pytest plugins
OPTIONAL = {"amdsmi", "codebleu", "tensorboard", "llama_cpp"}  # guarded imports; codebleu comes from dev.sh
# without its deps; llama_cpp (llama-cpp-python, the bench anchor) is built from source only when asked for


def imported(folders: list[str]) -> set[str]:
    names = set()
    for folder in folders:
        for path in (ROOT / folder).rglob("*.py"):
            if "examples" in path.parts:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names.add(node.module.split(".")[0])
    third_party = names - set(sys.stdlib_module_names) - OURS - {"__future__"} - OPTIONAL
    return {DISTRIBUTIONS.get(name, name) for name in third_party}


def declared(requirements: list[str]) -> set[str]:
    return {re.split(r"[\[<>=!;~ ]", r, maxsplit=1)[0].strip().lower() for r in requirements}


def test_pyproject_lists_exactly_what_is_imported():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = declared(project["dependencies"]) - NOT_IMPORTED
    assert imported(["greencode", "tui", "train"]) == runtime
    dev = declared(project["optional-dependencies"]["dev"]) - NOT_IMPORTED
    assert imported(["tests"]) - runtime == dev
