"""The import direction of DESIGN.md: edges -> services -> core/model/selector -> store -> errors.

Each package may import only the packages at its own level or below, and the two
services resources/ and ipam/ (both level 3) may not import each other beyond one
read seam: ipam reads the resources it decides on through ``resources.repo`` and
``resources.keys`` (as the CNI path does); resources never imports ipam (pool
create/delete get their IPAM side as an object from the caller). Checked by
reading every module's import statements (no code is run).
"""

from __future__ import annotations

import ast
import pathlib

import pytest

SRC = pathlib.Path(__file__).resolve().parents[1] / "src" / "topoipam"

LEVEL = {
    "errors": 0,
    "structs": 0,
    "extras": 0,
    "store": 1,
    "selector": 2,
    "model": 2,
    "core": 2,
    "resources": 3,
    "ipam": 3,
    "metrics": 3,
    "cli": 4,
    "cni": 4,
    "agent": 4,
}


def _package_of(module_path: pathlib.Path) -> str:
    rel = module_path.relative_to(SRC)
    return rel.parts[0].removesuffix(".py")


def _topoipam_imports(module_path: pathlib.Path):
    tree = ast.parse(module_path.read_text(), str(module_path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] if node.module == "topoipam" else [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "topoipam" and len(parts) > 1:
                yield parts[1], node.lineno, name


MODULES = sorted(p for p in SRC.rglob("*.py") if p.parent != SRC or p.name in ("errors.py", "structs.py", "extras.py"))


@pytest.mark.parametrize("module_path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_imports_point_down(module_path):
    own = _package_of(module_path)
    assert own in LEVEL, f"{own} has no level in test_layers.LEVEL"
    for target, lineno, _ in _topoipam_imports(module_path):
        assert target in LEVEL, f"{module_path.name}:{lineno} imports unknown package topoipam.{target}"
        assert LEVEL[target] <= LEVEL[own], (
            f"{module_path.relative_to(SRC)}:{lineno} imports topoipam.{target} (level {LEVEL[target]}) "
            f"from {own} (level {LEVEL[own]}): imports must point down"
        )


# Same-level pairs that may not import each other: package -> what it may import of the other.
APART = {
    ("resources", "ipam"): (),
    ("ipam", "resources"): ("topoipam.resources.repo", "topoipam.resources.keys"),
}


@pytest.mark.parametrize("module_path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_resources_and_ipam_apart(module_path):
    own = _package_of(module_path)
    for target, lineno, name in _topoipam_imports(module_path):
        allowed = APART.get((own, target))
        assert allowed is None or any(name == a or name.startswith(a + ".") for a in allowed), (
            f"{module_path.relative_to(SRC)}:{lineno} imports {name}: {own}/ may not import {target}/"
            + (f" (only {', '.join(allowed)})" if allowed else ""))
