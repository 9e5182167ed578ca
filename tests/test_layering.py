"""The dependency rules of DESIGN.md, checked on the source: data/ never imports core/,
launch/ or benchmarks/; core/ reaches data/ only for the config it composes; model code knows
nothing of DeepSpeed; the training loop takes its data through core.batches' protocols."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MODEL_CODE = ["core/model.py", "core/spatial.py", "core/temporal.py", "core/adapter.py"]


def _imports(path: Path) -> set[str]:
    """Top-level package names imported anywhere in the file (functions included)."""
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _top(names: set[str]) -> set[str]:
    return {n.split(".")[0] for n in names}


@pytest.mark.parametrize("path", sorted((REPO / "data").glob("*.py")), ids=lambda p: p.name)
def test_data_imports_no_core_launch_or_benchmarks(path: Path) -> None:
    assert not _top(_imports(path)) & {"core", "launch", "benchmarks"}


@pytest.mark.parametrize("path", sorted((REPO / "core").glob("*.py")), ids=lambda p: p.name)
def test_core_reaches_data_only_for_its_config(path: Path) -> None:
    data = {n for n in _imports(path) if n.split(".")[0] == "data"}
    assert not _top(_imports(path)) & {"launch", "benchmarks"}
    if path.name == "config.py":
        assert data <= {"data.config"}
    else:
        assert not data, f"{path.name} imports {data}: build data sources in launch/"


@pytest.mark.parametrize("name", MODEL_CODE)
def test_model_code_knows_nothing_of_deepspeed(name: str) -> None:
    assert "deepspeed" not in _top(_imports(REPO / name))
