"""A real ``hubbub serve`` over TLS, and an event handler that records the connect events.

The node is started as a user starts it (a subprocess, a TOML file, uvloop when installed),
waited for over https with the test CA; its handler is an aiohttp app on a thread of its own
that answers every ``connect`` with 204 and keeps each body, by the handler name in its path.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.conftest import ACCESS_KEY, SECONDARY_KEY, Server, free_port

WAIT = 10.0


@dataclass(frozen=True, kw_only=True)
class TlsServer(Server):
    """A running ``hubbub serve`` with TLS (its endpoints and connection strings are
    :class:`tests.conftest.Server`'s, with https and wss)."""

    config: Path
    log: Path
    ca_file: Path
    tls: bool = True

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def reload(self, text: str | None = None, expect: str = "configuration reloaded") -> None:
        """Write the configuration (if given), send SIGHUP and wait for ``expect`` in the log."""
        if text is not None:
            # Whole or not at all: the node's watch of the file may look at it any time, and a
            # file caught half written (empty, say) would be reloaded as it stands.
            scratch = self.config.with_suffix(".new")
            scratch.write_text(text)
            os.replace(scratch, self.config)
        seen = self.output().count(expect)
        self.process.send_signal(signal.SIGHUP)
        wait_for(lambda: self.output().count(expect) > seen, f"{expect!r} in the log", self)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def wait_for(condition: Any, what: str, server: TlsServer | None = None) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            log = server.output() if server is not None else ""
            raise AssertionError(f"no {what} within {WAIT} s\n{log}")
        time.sleep(0.02)


def client_context(ca_file: Path, cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca_file))
    if cert is not None:
        context.load_cert_chain(*cert)
    return context


def start_tls_server(
    tmp: Path,
    config_toml: str,
    ca_file: Path,
    *,
    args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    health_cert: tuple[Path, Path] | None = None,
) -> TlsServer:
    """Start ``hubbub serve --config`` and wait until its health endpoint answers over https."""
    config = tmp / "hubbub.toml"
    config.write_text(config_toml)
    port = free_port()
    cmd = [sys.executable, "-m", "hubbub", "serve", "--port", str(port), "--config", str(config)]
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env.pop("HUBBUB_ACCESS_KEY", None)
    log = tmp / "server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [*cmd, *args], stdout=out, stderr=subprocess.STDOUT, env=full_env
        )
    server = TlsServer(
        host="localhost",  # the name the test certificate carries
        port=port,
        access_key=ACCESS_KEY,
        secondary_key=SECONDARY_KEY,
        process=process,
        config=config,
        log=log,
        ca_file=ca_file,
    )
    url = f"https://localhost:{port}/api/health"
    deadline = time.monotonic() + 20
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"hubbub exited early: {server.output()}")
        try:
            context = client_context(ca_file, health_cert)  # a CA the node makes may be new
            request = urllib.request.Request(url, method="HEAD")
            with urllib.request.urlopen(request, timeout=1, context=context) as response:
                if response.status == 200:
                    return server
        except OSError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"hubbub did not become healthy in 20 s: {server.output()}")
        time.sleep(0.05)


@dataclass
class Recorder:
    """An event handler on its own thread: ``connect`` bodies by handler name, and the other
    events; every event is answered 204."""

    port: int = field(default_factory=free_port)
    connects: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    events: list[tuple[str, str, bytes]] = field(default_factory=list)
    """Every other event: handler name, event name, body."""
    _loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    _server: TestServer | None = None
    _thread: threading.Thread | None = None

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}/{{event}}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        app = web.Application()
        app.router.add_route("*", "/{name}/{event}", self._handle)
        self._server = TestServer(app, host="127.0.0.1", port=self.port)
        asyncio.run_coroutine_threadsafe(self._server.start_server(), self._loop).result(10)

    def stop(self) -> None:
        if self._server is not None:
            asyncio.run_coroutine_threadsafe(self._server.close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self._loop.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.method == "OPTIONS":
            return web.Response(headers={"WebHook-Allowed-Origin": "*"})
        body = await request.read()
        name, event = request.match_info["name"], request.match_info["event"]
        if event == "connect":
            self.connects.setdefault(name, []).append(json.loads(body))
        else:
            self.events.append((name, event, body))
        return web.Response(status=204)
