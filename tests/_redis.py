"""A real ``redis-server`` (or ``valkey-server``) for the tests that need one.

The server runs on a free loopback port with its own temporary directory and no persistence
(no RDB snapshots, no AOF), so a restart starts empty, as a crashed cache would. Fault tests
can stop, kill, restart, pause (SIGSTOP) and resume (SIGCONT) it.

``HUBBUB_TEST_REDIS_SERVER`` names the server binary (default ``redis-server``; set it to
``valkey-server`` to run the same tests on Valkey). Without the binary the tests are skipped,
except on CI (``CI`` set), where a missing server is an error: ``scripts/test`` installs it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import free_port

__all__ = ["RedisServer", "redis_binary"]

ENV_BINARY = "HUBBUB_TEST_REDIS_SERVER"


def _on_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def redis_binary() -> str:
    """The path of the server binary; skips the test (fails it on CI) when there is none."""
    name = os.environ.get(ENV_BINARY) or "redis-server"
    path = shutil.which(name)
    if path is None:
        message = (
            f"{name} not found: install it (Debian: apt-get install redis-server; "
            f"scripts/test does it) or point {ENV_BINARY} at a redis-server or valkey-server"
        )
        if _on_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return path


class RedisServer:
    """One server process; the port stays the same across restarts."""

    def __init__(self, directory: Path, binary: str | None = None) -> None:
        self.binary = binary or redis_binary()
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.paused = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server and wait until it answers PING."""
        assert self.process is None, "already running"
        log = open(self.directory / "redis.log", "ab")
        cmd = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.directory),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
        ]
        self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 10
        while not self._answers_ping():
            if self.process.poll() is not None:
                self.process = None
                raise RuntimeError(f"redis-server exited: {self.log_text()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError("redis-server did not answer PING in 10 s")
            time.sleep(0.01)

    def _answers_ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def log_text(self) -> str:
        path = self.directory / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """A graceful stop (SIGTERM); nothing is saved."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """A crash (SIGKILL)."""
        self._end(signal.SIGKILL)

    def restart(self) -> None:
        """Stop, then start again on the same port: every key and subscription is gone."""
        self.stop()
        self.start()

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open, nothing is answered."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        """Undo :meth:`pause` (SIGCONT)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)
        self.paused = False

    def _end(self, sig: signal.Signals) -> None:
        process = self.process
        if process is None:
            return
        if self.paused:
            self.resume()
        process.send_signal(sig)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        self.process = None
