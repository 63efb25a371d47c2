"""Imports point inwards: ``protocol/`` and ``core/`` do no I/O and know no outer layer."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import hubbub

SRC = Path(hubbub.__file__).parent
FORBIDDEN = {
    "protocol": ("asyncio", "aiohttp", "redis", "hubbub.core", "hubbub.broker", "hubbub.server"),
    "core": ("asyncio", "aiohttp", "redis", "hubbub.broker", "hubbub.server", "hubbub.node"),
}
FORBIDDEN["protocol"] += ("hubbub.node", "hubbub.service", "hubbub.client", "hubbub.events")
FORBIDDEN["core"] += ("hubbub.service", "hubbub.client", "hubbub.events", "hubbub.upstream")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_inner_layers_import_nothing_outward(layer: str) -> None:
    """No module of the layer imports asyncio, the web framework, redis or an outer layer."""
    modules = sorted((SRC / layer).glob("*.py"))
    assert modules
    found = {
        f"{path.name}: {name}"
        for path in modules
        for name in _imports(path)
        if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN[layer])
    }
    assert not found
