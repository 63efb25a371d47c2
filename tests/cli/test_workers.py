"""``hubbub serve --workers N``: N node processes on one port, on Redis, supervised."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import jwt
import pytest

from hubbub.cli import main
from hubbub.config import load_config
from hubbub.errors import ConfigError
from tests._redis import RedisServer

KEY = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCDEFGH"
CONFIG = "[hubs.anon]\nanonymous_connect = true\n"
NO_REDIS = (
    "hubbub: error: 2 workers need Redis, which the node processes share: give --redis-url "
    "redis://HOST:PORT/DB (or HUBBUB_REDIS_URL, or [engine] redis_url)\n"
)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUBBUB_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class Workers:
    """A running ``hubbub serve --workers N``."""

    process: subprocess.Popen[str]
    port: int
    pids: list[int]
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def start_workers(tmp: Path, redis_url: str, count: int) -> Workers:
    """Start the supervisor (in a session of its own, as a terminal's job) on a free port and
    wait for its connection string."""
    config = tmp / "hubbub.toml"
    config.write_text(CONFIG)
    log = tmp / "workers.log"
    cmd = [
        sys.executable,
        "-m",
        "hubbub",
        "serve",
        "--port",
        "0",
        "--access-key",
        KEY,
        "--config",
        str(config),
        "--redis-url",
        redis_url,
        "--workers",
        str(count),
    ]
    with open(log, "wb") as err:
        process = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=_env(), start_new_session=True
        )
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 30
    while not (lines and lines[-1].startswith("Connection string:")):
        line = process.stdout.readline()
        if not line or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"no connection string: {lines} {log.read_text()}")
        lines.append(line)
    match = re.fullmatch(
        rf"hubbub \S+ listening on http://127\.0\.0\.1:(\d+) with {count} workers "
        r"\(pids ([\d, ]+)\)\n",
        lines[-2],
    )
    assert match, lines
    assert (
        lines[-1]
        == f"Connection string: Endpoint=http://127.0.0.1:{match[1]};AccessKey={KEY};Version=1.0;\n"
    )
    pids = [int(pid) for pid in match[2].split(", ")]
    return Workers(process, int(match[1]), pids, log)


def stop(workers: Workers, sig: signal.Signals = signal.SIGTERM) -> int:
    if workers.process.poll() is None:
        workers.process.send_signal(sig)
    try:
        return workers.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(workers.process.pid, signal.SIGKILL)
        workers.process.wait()
        raise


@pytest.fixture
def workers(redis_server: RedisServer, tmp_path: Path) -> Iterator[Workers]:
    running = start_workers(tmp_path, redis_server.url, 2)
    yield running
    if running.process.poll() is None:
        stop(running)
    for pid in running.pids:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    assert running.process.stdout is not None
    running.process.stdout.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is gone for this purpose
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def held_by(pids: list[int], port: int) -> dict[int, int]:
    """How many established connections to ``port`` each process holds (from /proc)."""
    established: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":
                established.add(fields[9])
    counts = {}
    for pid in pids:
        inodes = set()
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
        counts[pid] = len(inodes & established)
    return counts


def _connect_many(port: int, count: int) -> list[socket.socket]:
    """``count`` keep-alive HTTP connections, each answered once (so accepted by a node)."""
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(b"HEAD /api/health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        sockets.append(sock)
    return sockets


def test_workers_without_redis_say_what_to_give(tmp_path: Path) -> None:
    """One line naming the flag, the variable and the key; exit code 2; nothing starts."""
    for args, env in [
        (["--workers", "2"], {}),
        ([], {"HUBBUB_WORKERS": "2"}),
    ]:
        result = subprocess.run(
            [sys.executable, "-m", "hubbub", "serve", "--port", "0", *args],
            capture_output=True,
            text=True,
            timeout=30,
            env={**_env(), **env},
        )
        assert result.returncode == 2
        assert result.stderr == NO_REDIS
        assert result.stdout == ""


def test_workers_setting_everywhere(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--workers``, ``HUBBUB_WORKERS`` and ``[server] workers``, validated like the others."""
    path = tmp_path / "hubbub.toml"
    path.write_text("[server]\nworkers = 3\n")
    assert load_config(str(path), env={}).workers == 3
    assert load_config(str(path), env={"HUBBUB_WORKERS": "4"}).workers == 4
    assert load_config(str(path), env={}, overrides={"workers": 5}).workers == 5
    assert load_config(None, env={}).workers == 1
    for text in ("workers = 0", "workers = '2'", "workers = 2.0", "workers = 257"):
        path.write_text(f"[server]\n{text}\n")
        with pytest.raises(ConfigError, match=r"server\.workers: expected"):
            load_config(str(path), env={})
    with pytest.raises(ConfigError, match=r"^HUBBUB_WORKERS: expected a number of node processes"):
        load_config(None, env={"HUBBUB_WORKERS": "many"})
    assert main(["check-config", "--workers", "0"]) == 2
    assert capsys.readouterr().err.startswith("hubbub: error: --workers: expected")
    assert main(["check-config", "--workers", "2"]) == 2  # no Redis: check-config says so too
    assert capsys.readouterr().err == NO_REDIS
    assert main(["check-config", "--workers", "2", "--redis-url", "redis://h:6379/0"]) == 0


@pytest.mark.redis
async def test_two_workers_both_accept_and_stop_on_ctrl_c(workers: Workers) -> None:
    """Connections land on both processes; Ctrl-C (SIGINT to the process group, as a terminal
    sends it) closes every client with 1001 as a single node does, and stops them all."""
    assert len(set(workers.pids)) == 2 and workers.process.pid not in workers.pids
    sockets = _connect_many(workers.port, 40)
    try:
        counts = held_by(workers.pids, workers.port)
        assert sum(counts.values()) == 40, counts
        assert all(count > 0 for count in counts.values()), counts
    finally:
        for sock in sockets:
            sock.close()

    url = f"ws://127.0.0.1:{workers.port}/client/hubs/anon"
    async with aiohttp.ClientSession() as session:
        clients = []
        for _ in range(16):
            ws = await session.ws_connect(url, protocols=("json.webpubsub.azure.v1",))
            assert (await ws.receive_json())["event"] == "connected"
            clients.append(ws)
        counts = held_by(workers.pids, workers.port)
        assert all(count > 0 for count in counts.values()), counts
        # One service: a send to the hub, answered by one worker, reaches every client.
        rest = f"http://127.0.0.1:{workers.port}/api/hubs/anon/:send?api-version=2024-12-01"
        bearer = jwt.encode({"aud": rest, "exp": int(time.time()) + 300}, KEY, "HS256")
        answer = await session.post(
            rest,
            data=b"to all",
            headers={"Authorization": f"Bearer {bearer}", "Content-Type": "text/plain"},
        )
        assert answer.status == 202
        for ws in clients:
            message = await ws.receive_json(timeout=10)
            assert (message["from"], message["data"]) == ("server", "to all"), message
        os.killpg(workers.process.pid, signal.SIGINT)
        for ws in clients:
            message = await ws.receive_json(timeout=15)
            assert message["event"] == "disconnected"
            assert message["message"].startswith("ServiceReload")
            closed = await ws.receive(timeout=15)
            assert closed.type == aiohttp.WSMsgType.CLOSE
            assert ws.close_code == 1001
            await ws.close()
    assert workers.process.wait(timeout=30) == 0
    assert not any(_alive(pid) for pid in workers.pids)


@pytest.mark.redis
def test_a_dead_worker_is_reported_and_replaced(workers: Workers) -> None:
    """kill -9 of one worker: the log says so, a new worker takes its place on the same port,
    and SIGTERM to the supervisor then stops the survivor and the new one."""
    dead = workers.pids[0]
    os.kill(dead, signal.SIGKILL)
    pattern = re.compile(
        rf"worker 1 \(pid {dead}[^)]*\) was killed by SIGKILL; .*started worker 1 again "
        r"\(pid (\d+)\)"
    )
    deadline = time.monotonic() + 20
    while not (found := pattern.search(workers.log_text())):
        assert time.monotonic() < deadline, workers.log_text()
        time.sleep(0.05)
    replacement = int(found[1])
    while f"worker 1 (pid {replacement}" not in workers.log_text().split(found[0], 1)[1]:
        assert time.monotonic() < deadline, workers.log_text()
        time.sleep(0.05)
    alive = [replacement, workers.pids[1]]
    sockets = _connect_many(workers.port, 40)
    try:
        counts = held_by(alive, workers.port)
        assert sum(counts.values()) == 40 and all(counts.values()), counts
    finally:
        for sock in sockets:
            sock.close()
    assert stop(workers) == 0
    assert not any(_alive(pid) for pid in alive)


def _wait_gone(pids: list[int], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while any(_alive(pid) for pid in pids):
        assert time.monotonic() < deadline, [pid for pid in pids if _alive(pid)]
        time.sleep(0.05)


@pytest.mark.redis
def test_workers_stop_when_the_supervisor_is_killed(workers: Workers) -> None:
    """kill -9 of the supervisor leaves no worker holding the port."""
    workers.process.kill()
    workers.process.wait(timeout=10)
    _wait_gone(workers.pids)
    with socket.socket() as sock:  # the port is free again
        sock.bind(("127.0.0.1", workers.port))


@pytest.mark.redis
def test_workers_dying_again_and_again_stop_the_supervisor(workers: Workers) -> None:
    """More than MAX_RESTARTS deaths within the window: the supervisor stops all, exit 1."""
    from hubbub.server.workers import MAX_RESTARTS

    current = list(workers.pids)
    for death in range(MAX_RESTARTS + 1):
        victim = current[death % 2]
        os.kill(victim, signal.SIGKILL)
        if death == MAX_RESTARTS:
            break
        pattern = re.compile(rf"\(pid {victim}[^)]*\) was killed by SIGKILL; .*\(pid (\d+)\)")
        deadline = time.monotonic() + 20
        while not (found := pattern.search(workers.log_text())):
            assert time.monotonic() < deadline, workers.log_text()
            time.sleep(0.05)
        current[death % 2] = int(found[1])
    assert workers.process.wait(timeout=30) == 1
    assert f"{MAX_RESTARTS + 1} workers died within 60 s; stopping the others" in (
        workers.log_text()
    )
    _wait_gone(current)


@pytest.mark.redis
def test_sighup_to_the_supervisor_reloads_every_worker(workers: Workers) -> None:
    """SIGHUP reaches each worker, which reloads its configuration as a single node does; the
    supervisor and the workers stay."""
    workers.process.send_signal(signal.SIGHUP)
    pattern = re.compile(r"worker (\d) \(pid (\d+)\) hubbub\.\S+: configuration reloaded")
    deadline = time.monotonic() + 20
    while len({m[2] for m in pattern.finditer(workers.log_text())}) < 2:
        assert time.monotonic() < deadline, workers.log_text()
        time.sleep(0.05)
    reloaded = {int(m[2]) for m in pattern.finditer(workers.log_text())}
    assert reloaded == set(workers.pids)
    assert workers.process.poll() is None
    assert all(_alive(pid) for pid in workers.pids)
    assert stop(workers) == 0
