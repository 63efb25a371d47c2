"""``hubbub serve --workers N``: N node processes on one machine, sharing one port.

The supervisor (the process ``hubbub serve`` started) reserves the port, then forks N workers.
Each worker is a complete node, as ``hubbub serve`` without ``--workers`` runs one: its own
event loop, its own connection to Redis and its own node id. Every worker listens on the same
address with ``SO_REUSEPORT`` (Linux), and the kernel spreads new connections over them. The
workers meet on Redis as nodes on different machines do, so several of them need a Redis URL
(:func:`check`): without one they would be N separate services behind one port.

Once every worker listens, the supervisor prints the connection string, once. Then it watches:

- SIGINT or SIGTERM (Ctrl-C reaches the workers too, as the terminal signals the whole process
  group): every worker gets SIGTERM and stops as a single node does (its clients get the
  ``disconnected`` message with ``ServiceReload`` and a 1001 close); the supervisor waits up to
  :data:`STOP_SECONDS` for them, then kills what is left. A second signal kills them at once.
- A worker that dies on its own (a crash, ``kill -9``, the OOM killer) is logged with its exit
  code or signal and replaced by a new worker on the same port: its clients reconnect (the
  SDKs do) to the other workers, and their reliable sessions are restored from Redis when
  session replication is on. Replacing it is what a supervisor of single nodes (systemd,
  Kubernetes) does too; stopping the service for one lost process would cost every client of
  the others their connections.
- A worker that fails before it first listens (the port taken, Redis refusing the URL), or more
  than :data:`MAX_RESTARTS` deaths within :data:`RESTART_WINDOW_SECONDS`, stops them all: the
  failure is not one a new process would get past. The exit code is 2 for a failure to start
  (the worker printed the reason), 1 for too many deaths.
- SIGHUP is passed on to every worker, which reloads its configuration and certificate as a
  single node does (each also watches the configuration file itself).
- A supervisor killed outright (``kill -9``) takes its workers with it: each asked the kernel
  for SIGTERM when its parent dies (``PR_SET_PDEATHSIG``), and stops gracefully.

Linux only: elsewhere ``SO_REUSEPORT`` does not spread connections over processes (or does not
exist), and :func:`check` says so.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import TYPE_CHECKING

from hubbub.config import Config, url_host
from hubbub.errors import ConfigError

if TYPE_CHECKING:
    from hubbub.server.app import Listening

__all__ = [
    "MAX_RESTARTS",
    "RESTART_WINDOW_SECONDS",
    "STOP_SECONDS",
    "WorkerInfo",
    "check",
    "supervise",
]

log = logging.getLogger("hubbub.workers")

STOP_SECONDS = 20.0
"""How long the workers may take to stop gracefully before they are killed."""
MAX_RESTARTS = 5
"""Deaths of workers tolerated within :data:`RESTART_WINDOW_SECONDS`; one more stops all."""
RESTART_WINDOW_SECONDS = 60.0

PR_SET_PDEATHSIG = 1
"""prctl(2) option: the signal a process gets when its parent dies."""
EXIT_START_FAILED = 2
EXIT_TOO_MANY_DEATHS = 1

RunNode = Callable[[Config, Callable[["Listening"], None]], int]
"""Runs one node in the worker until it is stopped: ``run(config, started) -> exit code``;
``started(listening)`` is called once it listens (a :class:`hubbub.server.app.Listening`)."""


@dataclass
class WorkerInfo:
    """One worker process, as the supervisor knows it."""

    index: int
    """1 to N; a replacement keeps the index of the worker it replaces."""
    process: BaseProcess
    conn: Connection
    """The worker's end sends ``(node_id, addresses)`` once it listens."""
    started_at: float = field(default_factory=time.monotonic)
    listening: bool = False
    node_id: str | None = None
    addresses: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        pid = self.process.pid
        assert pid is not None
        return pid

    def describe(self) -> str:
        node = f", node {self.node_id}" if self.node_id else ""
        return f"worker {self.index} (pid {self.pid}{node})"


def check(config: Config) -> None:
    """Several workers need Redis to be one service.

    Raises:
        ConfigError: one line saying what to give.
    """
    if config.workers > 1 and not sys.platform.startswith("linux"):
        raise ConfigError(
            f"{config.workers} workers need Linux (SO_REUSEPORT spreading connections over "
            "processes); elsewhere run one node per port behind a balancer"
        )
    if config.workers > 1 and not config.redis_url:
        raise ConfigError(
            f"{config.workers} workers need Redis, which the node processes share: give "
            "--redis-url redis://HOST:PORT/DB (or HUBBUB_REDIS_URL, or [engine] redis_url)"
        )


def _reserve(host: str, port: int) -> tuple[int, list[socket.socket]]:
    """Bind (without listening) every address of ``host`` with ``SO_REUSEPORT``: port 0
    becomes one free port, and no other program takes it while workers come and go. A
    socket that does not listen gets no connections; the workers' listening ones do."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    reserved: list[socket.socket] = []
    seen: set[tuple[int, str]] = set()
    try:
        for family, kind, proto, _, address in infos:
            if (family, str(address[0])) in seen:
                continue
            seen.add((family, str(address[0])))
            sock = socket.socket(family, kind, proto)
            reserved.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((address[0], port, *address[2:]))
            port = port or sock.getsockname()[1]
    except OSError:
        for sock in reserved:
            sock.close()
        raise
    return port, reserved


def _stop_with_parent(supervisor: int) -> None:
    """Have the kernel send this process SIGTERM when the supervisor dies (even by
    ``kill -9``), so no worker is left holding the port."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the workers outlive a killed supervisor
        return
    if os.getppid() != supervisor:  # it died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _name_log_lines(index: int, config: Config) -> None:
    """Every line a worker logs names it (the workers share the supervisor's standard error):
    ``... INFO worker 2 (pid 1234) hubbub.node: ...``."""
    from hubbub.logs import FORMAT, SafeFormatter

    fmt = FORMAT.replace("%(name)s", f"worker {index} (pid %(process)d) %(name)s")
    formatter = SafeFormatter(fmt, config.access_keys)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(formatter)


def _child(
    run: RunNode,
    config: Config,
    conn: Connection,
    reserved: list[socket.socket],
    supervisor: int,
    index: int,
) -> None:
    """The worker process: a node on the shared port, reporting to the supervisor."""
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the node reloads on it
    _stop_with_parent(supervisor)
    for sock in reserved:
        sock.close()
    _name_log_lines(index, config)

    def started(listening: Listening) -> None:
        with contextlib.suppress(OSError):
            conn.send((listening.node_id, listening.addresses))

    code = run(config, started)
    conn.close()
    raise SystemExit(code)


class _Supervisor:
    def __init__(
        self, config: Config, run: RunNode, reserved: list[socket.socket], wake: int
    ) -> None:
        self.config = config
        self.run = run
        self.reserved = reserved
        self.wake = wake
        self.context = multiprocessing.get_context("fork")
        self.workers: dict[int, WorkerInfo] = {}
        self.deaths: list[float] = []
        self.signals = 0

    def start(self, index: int) -> WorkerInfo:
        ours, theirs = self.context.Pipe(duplex=False)
        process = self.context.Process(
            target=_child,
            args=(self.run, self.config, theirs, self.reserved, os.getpid(), index),
            name=f"hubbub-worker-{index}",
        )
        process.start()
        theirs.close()
        worker = WorkerInfo(index, process, ours)
        self.workers[index] = worker
        return worker

    def _drain_wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self.wake, 64):
                pass

    def _ready(self, timeout: float | None) -> list[object]:
        waitables: list[object] = [self.wake]
        for worker in self.workers.values():
            waitables.append(worker.process.sentinel)
            if not worker.listening:
                waitables.append(worker.conn)
        return list(wait(waitables, timeout))  # type: ignore[arg-type]

    def _heard(self, worker: WorkerInfo) -> None:
        try:
            node_id, addresses = worker.conn.recv()
        except (EOFError, OSError):
            return
        worker.listening = True
        worker.node_id = node_id
        worker.addresses = list(addresses)
        log.info("%s listening", worker.describe())

    def serve(self, announce: Callable[[list[WorkerInfo]], None]) -> int:
        """Start the workers, announce once all listen, then supervise until a signal."""
        for index in range(1, self.config.workers + 1):
            self.start(index)
        announced = False
        while True:
            ready = self._ready(None)
            if self.wake in ready:
                self._drain_wake()
            if self.signals:
                return self.stop()
            for worker in list(self.workers.values()):
                if not worker.listening and worker.conn in ready:
                    self._heard(worker)
            for worker in list(self.workers.values()):
                if worker.process.sentinel in ready or not worker.process.is_alive():
                    code = self._died(worker, announced)
                    if code is not None:
                        return code
            if not announced and all(w.listening for w in self.workers.values()):
                announced = True
                announce(sorted(self.workers.values(), key=lambda w: w.index))

    def _died(self, worker: WorkerInfo, announced: bool) -> int | None:
        """A worker ended without being asked: the exit code to stop all with, or None when a
        new worker takes its place."""
        worker.process.join()
        worker.conn.close()
        del self.workers[worker.index]
        how = _ending(worker.process.exitcode)
        if not announced:
            log.error("%s %s before it listened; stopping the others", worker.describe(), how)
            self.stop()
            return EXIT_START_FAILED
        now = time.monotonic()
        self.deaths = [t for t in self.deaths if now - t < RESTART_WINDOW_SECONDS] + [now]
        if len(self.deaths) > MAX_RESTARTS:
            log.error(
                "%s %s: %d workers died within %g s; stopping the others",
                worker.describe(),
                how,
                len(self.deaths),
                RESTART_WINDOW_SECONDS,
            )
            self.stop()
            return EXIT_TOO_MANY_DEATHS
        replacement = self.start(worker.index)
        log.warning(
            "%s %s; its clients reconnect to the other workers; started worker %d again (pid %d)",
            worker.describe(),
            how,
            worker.index,
            replacement.pid,
        )
        return None

    def stop(self) -> int:
        """Stop every worker gracefully (SIGTERM), killing those that take too long or when a
        second signal arrives."""
        signals = self.signals
        live = [w for w in self.workers.values() if w.process.is_alive()]
        if live:
            log.info("stopping %d worker%s", len(live), "" if len(live) == 1 else "s")
        for worker in live:
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        while live:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.signals > signals:
                for worker in live:
                    log.warning("%s did not stop in time; killing it", worker.describe())
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(worker.pid, signal.SIGKILL)
                for worker in live:
                    worker.process.join()
                break
            ready = self._ready(remaining)
            if self.wake in ready:
                self._drain_wake()
            live = [w for w in live if w.process.is_alive()]
        for worker in self.workers.values():
            worker.process.join()
            worker.conn.close()
        self.workers.clear()
        return 0


def _ending(code: int | None) -> str:
    if code is None:
        return "ended"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name}"
    return f"exited with code {code}"


def supervise(
    config: Config,
    run: RunNode,
    announce: Callable[[Config, list[WorkerInfo]], None],
) -> int:
    """Run ``config.workers`` nodes sharing the configured port until SIGINT or SIGTERM.

    Args:
        config: the nodes' configuration (port 0: one free port for all).
        run: runs one node in a worker (see :data:`RunNode`).
        announce: called once, when every worker listens, with the configuration (its port
            the one they share) and the workers.

    Returns:
        The exit code: 0 when stopped by a signal, else see the module's description.

    Raises:
        ConfigError: no Redis URL, or the address cannot be bound.
    """
    check(config)
    try:
        port, reserved = _reserve(config.host, config.port)
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {url_host(config.host)}:{config.port}: {exc.strerror or exc}"
        ) from exc
    config = replace(config, port=port)
    read, write = os.pipe()
    os.set_blocking(read, False)
    os.set_blocking(write, False)
    supervisor = _Supervisor(config, run, reserved, read)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        supervisor.signals += 1

    def on_hangup(signum: int, frame: FrameType | None) -> None:
        for worker in list(supervisor.workers.values()):  # each reloads its configuration
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGHUP)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, on_hangup)
    old_wakeup = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
    try:
        return supervisor.serve(lambda workers: announce(config, workers))
    finally:
        if supervisor.workers:  # an exception on the way: leave no worker behind
            supervisor.signals += 1
            supervisor.stop()
        signal.set_wakeup_fd(old_wakeup)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        os.close(read)
        os.close(write)
        for sock in reserved:
            sock.close()
