"""dvc.yaml names every module a stage runs, so ``dvc repro`` never skips a stage whose code changed."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

STAGE_MODULES = {"generate": "slipway.datagen", "ingest": "flows.ingest", "features": "flows.materialize", "train": "flows.train"}
PACKAGES = ("slipway", "features", "models", "flows", "bentos")


def _file(module: str) -> Path | None:
    path = REPO / module.replace(".", "/")
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_files(module: str) -> set[str]:
    """The project's source files ``module`` imports, directly or not (read from the source, imports in functions too)."""
    seen: set[Path] = set()
    pending = [module]
    while pending:
        name = pending.pop()
        file = _file(name)
        if file is None or file in seen:
            continue
        seen.add(file)
        found: list[str] = []
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Import):
                found.extend(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.append(node.module)
                found.extend(f"{node.module}.{alias.name}" for alias in node.names)  # from features import gold
        for name in found:
            parts = name.split(".")
            if parts[0] in PACKAGES:
                pending.extend(".".join(parts[: i + 1]) for i in range(len(parts)))  # a package's __init__ runs first
    files = {str(f.relative_to(REPO)) for f in seen if f.parts[len(REPO.parts)] in PACKAGES}
    return {f for f in files if not (f.endswith("__init__.py") and not (REPO / f).read_text().strip())}


@pytest.mark.parametrize("stage", sorted(STAGE_MODULES))
def test_every_module_a_stage_imports_is_one_of_its_deps(stage: str) -> None:
    deps = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage]["deps"]
    covered = [str(d).rstrip("/") for d in deps]
    missing = sorted(f for f in imported_files(STAGE_MODULES[stage]) if not any(f == d or f.startswith(f"{d}/") for d in covered))
    assert not missing, f"dvc.yaml stage {stage!r} does not list {missing} among its deps"
