"""Calls with the official JavaScript service SDK, from Python tests.

``tests/node/rest_calls.mjs`` runs a list of ``[operation, ...arguments]`` with
``@azure/web-pubsub`` and prints one outcome per call; it needs Node.js 20+ and
``npm ci --prefix tests/node``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.compat._clients import ServerLike

NODE_DIR = Path(__file__).resolve().parents[1] / "node"


def node_calls(server: ServerLike, hub: str, calls: list[list[Any]]) -> list[dict[str, Any]]:
    """Run ``calls`` with the JavaScript service SDK; one outcome per call."""
    if shutil.which("node") is None:
        pytest.fail("Node.js is not on PATH; install Node.js 20+", pytrace=False)
    if not (NODE_DIR / "node_modules" / "@azure" / "web-pubsub" / "package.json").is_file():
        pytest.fail("run `npm ci --prefix tests/node` first", pytrace=False)
    env = {**os.environ, "HUBBUB_CONNECTION_STRING": server.connection_string, "HUBBUB_HUB": hub}
    proc = subprocess.run(
        ["node", "rest_calls.mjs", json.dumps(calls)],
        cwd=NODE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=45,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    outcomes: list[dict[str, Any]] = json.loads(proc.stdout.splitlines()[-1])
    return outcomes
