"""Run a tests/compat suite against the cluster: its tests and fixtures, collected again in a
module of tests/cluster whose ``server`` fixture is the 3-node cluster."""

from __future__ import annotations

from types import ModuleType
from typing import Any

from _pytest.fixtures import FixtureFunctionDefinition


def suite(module: ModuleType) -> dict[str, Any]:
    """The tests and fixtures of ``module`` but its ``server`` (for ``globals().update``)."""
    return {
        name: value
        for name, value in vars(module).items()
        if name.startswith("test_")
        or (isinstance(value, FixtureFunctionDefinition) and name != "server")
    }
