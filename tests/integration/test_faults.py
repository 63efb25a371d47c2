"""Reliable sessions under repeated network drops, driven by the official client SDKs.

Many SDK clients connect through one :class:`CuttingProxy` while messages flow steadily to
each client's connection id and user (REST, official Python server SDK) and to a group they
all belong to (an official Python client SDK publisher connected directly). The proxy resets
every connection through it at random moments, many times; each client recovers its session
(client-protocols.md §4) and must end up with exactly what was published to it: nothing
lost, nothing twice, each publisher's order kept, on the connection id it started with.

A drop is one client connection reset by the proxy; each suite drops more than 1,000.
The suites: `azure-messaging-webpubsubclient` (aio and sync clients in one run) and
`@azure/web-pubsub-client` 1.0.4 in Node.js (`tests/node/reliable_drops.mjs`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

import pytest
from azure.messaging.webpubsubclient import WebPubSubClient as SyncWebPubSubClient
from azure.messaging.webpubsubclient.aio import WebPubSubClient
from azure.messaging.webpubsubclient.models import (
    CallbackType,
    OnConnectedArgs,
    OnDisconnectedArgs,
    OnGroupDataMessageArgs,
    OnServerDataMessageArgs,
    WebPubSubDataType,
)
from azure.messaging.webpubsubservice.aio import WebPubSubServiceClient

from tests.conftest import Server, start_server, stop_server
from tests.integration._proxy import CuttingProxy

GROUP = "drops"
USERS = 8
"""Clients share these user ids round-robin, so a user message reaches several clients."""
CUT_PHASE = 18.0
"""Seconds during which the proxy keeps cutting..."""
CUT_PHASE_MAX = 30.0
"""...or longer, up to this, on a machine so slow that fewer clients were back at each cut."""
CUT_GAP = (0.9, 1.5)
"""Random pause between two cuts (the SDKs retry a failed recovery after 1 s)."""
FOLLOW_UP = 0.4
"""Share of cuts that get a second cut right after them, while the clients recover."""
FOLLOW_UP_GAP = (0.002, 0.08)
MIN_DROPS = 1000
DROPS_WANTED = 1100
CONNECTION_EVERY = 0.4
USER_EVERY = 0.2
GROUP_EVERY = 0.1
"""Publishing pace of each stream, seconds between two messages."""
TAIL = 1.5
"""Publishing goes on this long after the last cut."""
DRAIN = 20.0
"""Deadline for everything published to have arrived once the publishers stopped."""
START = 30.0
"""Deadline for every client to be connected."""

PY_AIO_CLIENTS = 84
PY_SYNC_CLIENTS = 16
JS_CLIENTS = 80

NODE_DIR = Path(__file__).resolve().parents[1] / "node"
NODE_SCRIPT = NODE_DIR / "reliable_drops.mjs"


# --------------------------------------------------------------------------- observations


@dataclass
class Observed:
    """What one SDK client reported: its lifecycle events and its data messages."""

    user: str
    connected: list[str] = field(default_factory=list)
    disconnected: int = 0
    stopped: int = 0
    frames: list[tuple[int, str, int]] = field(default_factory=list)
    """(sequenceId, stream, n) per data message, stream "c"onnection, "u"ser or "g"roup."""

    def snapshot(self) -> Observed:
        return Observed(
            self.user, list(self.connected), self.disconnected, self.stopped, list(self.frames)
        )

    def record(self, sequence_id: int | None, data: Any) -> None:
        stream, _, n = str(data).partition(":")
        self.frames.append((sequence_id or 0, stream, int(n)))


def describe(got: list[int], expected: list[int]) -> str:
    """A short account of how a received stream differs from the published one."""
    counts = Counter(got)
    missing = sorted(set(expected) - set(got))
    doubled = sorted(n for n, c in counts.items() if c > 1)
    extra = sorted(set(got) - set(expected))
    disorder = next((i for i in range(1, len(got)) if got[i] <= got[i - 1]), None)
    parts = [f"{len(got)} received of {len(expected)}"]
    if missing:
        parts.append(f"missing {missing[:10]}{'...' if len(missing) > 10 else ''}")
    if doubled:
        parts.append(f"twice {doubled[:10]}")
    if extra:
        parts.append(f"never published {extra[:10]}")
    if disorder is not None:
        parts.append(f"out of order at {disorder}: {got[max(0, disorder - 2) : disorder + 2]}")
    return ", ".join(parts)


# --------------------------------------------------------------------------- publishing


class Publishing:
    """Steady streams to every connection id, every user and the group; records what succeeded.

    Each stream's messages are `<stream>:<n>` with n counting from 0; a message counts as
    published once the REST call answered 202 or the publisher's `sendToGroup` was acked.
    """

    def __init__(
        self,
        service: WebPubSubServiceClient,
        publisher: WebPubSubClient,
        connection_ids: list[str],
        users: list[str],
    ) -> None:
        self._service = service
        self._publisher = publisher
        self.connection: dict[str, list[int]] = {cid: [] for cid in connection_ids}
        self.user: dict[str, list[int]] = {user: [] for user in users}
        self.group: list[int] = []
        self.errors: list[str] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._every(CONNECTION_EVERY, self._to_connections)),
            asyncio.create_task(self._every(USER_EVERY, self._to_users)),
            asyncio.create_task(self._every(GROUP_EVERY, self._to_group)),
        ]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.wait_for(asyncio.gather(*self._tasks), 30)

    def expected_total(self, connection_id: str, user: str) -> int:
        return len(self.connection[connection_id]) + len(self.user[user]) + len(self.group)

    async def _every(self, interval: float, step: Callable[[], Awaitable[None]]) -> None:
        while not self._stop.is_set():
            await step()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), interval)

    async def _guard(self, what: str, call: Awaitable[Any]) -> bool:
        try:
            await asyncio.wait_for(call, 10)
            return True
        except Exception as exc:
            self.errors.append(f"{what}: {type(exc).__name__}: {exc}")
            return False

    async def _to_connection(self, cid: str) -> None:
        sent = self.connection[cid]
        n = len(sent)
        call = self._service.send_to_connection(cid, f"c:{n}", content_type="text/plain")
        if await self._guard(f"send to connection {cid}", call):
            sent.append(n)

    async def _to_connections(self) -> None:
        await asyncio.gather(*(self._to_connection(cid) for cid in self.connection))

    async def _to_user(self, user: str) -> None:
        sent = self.user[user]
        n = len(sent)
        call = self._service.send_to_user(user, f"u:{n}", content_type="text/plain")
        if await self._guard(f"send to user {user}", call):
            sent.append(n)

    async def _to_users(self) -> None:
        await asyncio.gather(*(self._to_user(user) for user in self.user))

    async def _to_group(self) -> None:
        n = len(self.group)
        call = self._publisher.send_to_group(GROUP, f"g:{n}", WebPubSubDataType.TEXT)
        if await self._guard("send to group", call):
            self.group.append(n)


# --------------------------------------------------------------------------- fleets


class Fleet(Protocol):
    """A set of SDK clients connected through the proxy."""

    async def start(self, urls: list[str], users: list[str]) -> list[str]:
        """Connect every client; returns their connection ids."""
        ...

    async def observe(self) -> list[Observed]:
        """The current observations, one per client, in start order."""
        ...

    async def stop(self) -> None: ...


class PythonFleet:
    """`azure-messaging-webpubsubclient` clients: aio ones in this loop, sync ones in threads."""

    def __init__(self, aio_count: int, sync_count: int) -> None:
        self._aio_count = aio_count
        self._sync_count = sync_count
        self._aio: list[WebPubSubClient] = []
        self._sync: list[SyncWebPubSubClient] = []
        self._observed: list[Observed] = []

    @property
    def size(self) -> int:
        return self._aio_count + self._sync_count

    async def start(self, urls: list[str], users: list[str]) -> list[str]:
        self._observed = [Observed(user) for user in users]
        opening: list[Awaitable[None]] = []
        for index, (url, obs) in enumerate(zip(urls, self._observed, strict=True)):
            if index < self._aio_count:
                opening.append(self._open_aio(url, obs))
            else:
                opening.append(asyncio.to_thread(self._open_sync, url, obs))
        await asyncio.wait_for(asyncio.gather(*opening), START)
        deadline = time.monotonic() + START
        while not all(obs.connected for obs in self._observed):
            assert time.monotonic() < deadline, "not every client reported `connected`"
            await asyncio.sleep(0.05)
        return [obs.connected[0] for obs in self._observed]

    async def _open_aio(self, url: str, obs: Observed) -> None:
        client = WebPubSubClient(url)
        self._aio.append(client)

        async def on_connected(e: OnConnectedArgs) -> None:
            obs.connected.append(e.connection_id)

        async def on_disconnected(e: OnDisconnectedArgs) -> None:
            obs.disconnected += 1

        async def on_stopped() -> None:
            obs.stopped += 1

        async def on_server(e: OnServerDataMessageArgs) -> None:
            obs.record(e.sequence_id, e.data)

        async def on_group(e: OnGroupDataMessageArgs) -> None:
            obs.record(e.sequence_id, e.data)

        await client.subscribe(CallbackType.CONNECTED, on_connected)
        await client.subscribe(CallbackType.DISCONNECTED, on_disconnected)
        await client.subscribe(CallbackType.STOPPED, on_stopped)
        await client.subscribe(CallbackType.SERVER_MESSAGE, on_server)
        await client.subscribe(CallbackType.GROUP_MESSAGE, on_group)
        await client.open()

    def _open_sync(self, url: str, obs: Observed) -> None:
        # the sync client runs each callback on a thread of its own, so callbacks may
        # interleave; the observations are put in order by sequenceId before comparing
        client = SyncWebPubSubClient(url)
        self._sync.append(client)

        def on_disconnected(e: OnDisconnectedArgs) -> None:
            obs.disconnected += 1

        def on_stopped() -> None:
            obs.stopped += 1

        client.subscribe(CallbackType.CONNECTED, lambda e: obs.connected.append(e.connection_id))
        client.subscribe(CallbackType.DISCONNECTED, on_disconnected)
        client.subscribe(CallbackType.STOPPED, on_stopped)
        client.subscribe(CallbackType.SERVER_MESSAGE, lambda e: obs.record(e.sequence_id, e.data))
        client.subscribe(CallbackType.GROUP_MESSAGE, lambda e: obs.record(e.sequence_id, e.data))
        client.open()

    async def observe(self) -> list[Observed]:
        return [obs.snapshot() for obs in self._observed]

    async def stop(self) -> None:
        closing: list[Awaitable[None]] = [c.close() for c in self._aio]
        closing += [asyncio.to_thread(c.close) for c in self._sync]
        results = await asyncio.wait_for(asyncio.gather(*closing, return_exceptions=True), 30)
        errors = [r for r in results if isinstance(r, BaseException)]
        assert not errors, errors[:3]


class NodeFleet:
    """`@azure/web-pubsub-client` clients in one Node.js process (tests/node/reliable_drops.mjs).

    The script reads commands on stdin (`report`, `stop`) and answers one JSON line each.
    """

    def __init__(self, count: int, stderr: IO[bytes]) -> None:
        self.size = count
        self._stderr = stderr
        self._proc: asyncio.subprocess.Process | None = None
        self.unexpected: list[str] = []
        """Unhandled promise rejections inside Node (SDK background work)."""

    async def start(self, urls: list[str], users: list[str]) -> list[str]:
        self._proc = await asyncio.create_subprocess_exec(
            "node",
            str(NODE_SCRIPT),
            cwd=NODE_DIR,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=self._stderr,
            limit=64 * 1024 * 1024,
        )
        await self._send(
            {"clients": [{"url": u, "user": n} for u, n in zip(urls, users, strict=True)]}
        )
        ready = await self._answer("ready", START)
        ids: list[str] = ready["connectionIds"]
        return ids

    async def _send(self, command: dict[str, Any]) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.write((json.dumps(command) + "\n").encode())
        await self._proc.stdin.drain()

    async def _answer(self, kind: str, wait: float) -> dict[str, Any]:
        assert self._proc is not None and self._proc.stdout is not None
        deadline = time.monotonic() + wait
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"node did not answer {kind!r} within {wait} s"
            line = await asyncio.wait_for(self._proc.stdout.readline(), left)
            assert line, f"node exited (status {await self._proc.wait()}) before {kind!r}"
            if not line.startswith(b"{"):
                continue
            answer: dict[str, Any] = json.loads(line)
            if "error" in answer:
                raise AssertionError(f"node: {answer['error']}")
            if kind in answer:
                value: dict[str, Any] = answer[kind]
                return value

    async def observe(self) -> list[Observed]:
        await self._send({"command": "report"})
        report = await self._answer("report", 30)
        self.unexpected = report["unexpected"]
        out: list[Observed] = []
        for c in report["clients"]:
            obs = Observed(c["user"], c["connected"], c["disconnected"], c["stopped"])
            obs.frames = [(seq, stream, n) for seq, stream, n in c["frames"]]
            out.append(obs)
        return out

    async def stop(self) -> None:
        if self._proc is None:
            return
        try:
            if self._proc.returncode is None:
                await self._send({"command": "stop"})
                await self._answer("stopped", 30)
                await asyncio.wait_for(self._proc.wait(), 10)
        finally:
            if self._proc.returncode is None:
                self._proc.kill()
                await self._proc.wait()


# --------------------------------------------------------------------------- the scenario


@dataclass
class Outcome:
    drops: int
    cuts: int
    connection_ids: list[str]
    observed: list[Observed]
    publishing: Publishing
    cut_errors: list[str]


@pytest.fixture(scope="module")
def drop_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A node of its own, so that its log tells only this story."""
    srv = start_server(tmp_path_factory.mktemp("faults"))
    yield srv
    stop_server(srv)


@contextlib.asynccontextmanager
async def services(server: Server, hub: str) -> AsyncIterator[WebPubSubServiceClient]:
    service = WebPubSubServiceClient.from_connection_string(server.connection_string, hub=hub)
    try:
        yield service
    finally:
        await service.close()


async def client_url(service: WebPubSubServiceClient, port: int, server: Server, **kw: Any) -> str:
    token = await service.get_client_access_token(**kw)
    url: str = token["url"]
    return url.replace(f"{server.host}:{server.port}", f"{server.host}:{port}", 1)


async def cut_repeatedly(proxy: CuttingProxy, rng: random.Random, errors: list[str]) -> int:
    """Cut at random moments for CUT_PHASE seconds, longer (up to CUT_PHASE_MAX) while the
    drops are still short of DROPS_WANTED; returns how many cuts.

    Some cuts are followed closely by another one, which catches recoveries half-way (TCP
    connected, upgrade in flight or just done); the SDKs then wait 1 s before the next
    attempt, and messages keep arriving for the detached sessions meanwhile.
    """
    start = time.monotonic()
    cuts = 0
    while True:
        elapsed = time.monotonic() - start
        if elapsed >= CUT_PHASE_MAX or (elapsed >= CUT_PHASE and proxy.cuts >= DROPS_WANTED):
            return cuts
        await asyncio.sleep(rng.uniform(*CUT_GAP))
        for _ in range(2 if rng.random() < FOLLOW_UP else 1):
            try:
                proxy.cut()
            except OSError as exc:  # a connection that closed itself at that very moment
                errors.append(repr(exc))
            cuts += 1
            await asyncio.sleep(rng.uniform(*FOLLOW_UP_GAP))


async def wait_delivered(fleet: Fleet, publishing: Publishing, ids: list[str]) -> list[Observed]:
    """Observations once every client has at least as many messages as were published to it."""
    deadline = time.monotonic() + DRAIN
    while True:
        observed = await fleet.observe()
        behind = [
            i
            for i, (cid, obs) in enumerate(zip(ids, observed, strict=True))
            if len(obs.frames) < publishing.expected_total(cid, obs.user)
        ]
        if not behind or time.monotonic() > deadline:
            return observed
        await asyncio.sleep(0.25)


async def run_drops(server: Server, hub: str, fleet: Fleet, size: int) -> Outcome:
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    users = [f"user{i % USERS}" for i in range(size)]
    async with services(server, hub) as service, CuttingProxy(server.host, server.port) as proxy:
        urls = [
            await client_url(service, proxy.port, server, user_id=user, groups=[GROUP])
            for user in users
        ]
        publisher = WebPubSubClient(
            await client_url(
                service, server.port, server, user_id="publisher", roles=["webpubsub.sendToGroup"]
            )
        )
        await asyncio.wait_for(publisher.open(), START)
        try:
            ids = await fleet.start(urls, users)
            publishing = Publishing(service, publisher, ids, sorted(set(users)))
            publishing.start()
            cut_errors: list[str] = []
            try:
                cuts = await cut_repeatedly(proxy, rng, cut_errors)
                await asyncio.sleep(TAIL)
            finally:
                await publishing.stop()
            observed = await wait_delivered(fleet, publishing, ids)
            # the sessions are all still there, under their first ids
            exists = await asyncio.gather(*(service.connection_exists(cid) for cid in ids))
            assert all(exists), [cid for cid, e in zip(ids, exists, strict=True) if not e][:5]
            drops = proxy.cuts
        finally:
            await fleet.stop()
            await publisher.close()
    print(f"seed {seed}: {cuts} cuts, {drops} drops over {size} clients")
    return Outcome(drops, cuts, ids, observed, publishing, cut_errors)


def problems(outcome: Outcome) -> list[str]:
    """Everything that differs from an exact, once-only, in-order delivery."""
    out: list[str] = []
    pub = outcome.publishing
    for i, (cid, obs) in enumerate(zip(outcome.connection_ids, outcome.observed, strict=True)):
        who = f"client {i} ({cid}, {obs.user})"
        if obs.connected != [cid]:
            out.append(f"{who}: connected events {obs.connected}")
        if obs.disconnected or obs.stopped:
            out.append(f"{who}: {obs.disconnected} disconnected, {obs.stopped} stopped events")
        frames = sorted(obs.frames)
        seqs = [seq for seq, _, _ in frames]
        if seqs != list(range(1, len(seqs) + 1)):
            every = list(range(1, (seqs[-1] if seqs else 0) + 1))
            out.append(f"{who}: sequenceIds: {describe(seqs, every)}")
        for stream, expected in (
            ("c", pub.connection[cid]),
            ("u", pub.user[obs.user]),
            ("g", pub.group),
        ):
            got = [n for _, s, n in frames if s == stream]
            if got != expected:
                out.append(f"{who}: stream {stream}: {describe(got, expected)}")
    return out


def assert_exact(outcome: Outcome) -> None:
    pub = outcome.publishing
    assert not pub.errors, pub.errors[:5]
    assert len(pub.group) > 50 and all(len(v) > 10 for v in pub.connection.values())
    found = problems(outcome)
    assert not found, f"{len(found)} problems:\n" + "\n".join(found[:40])
    assert outcome.drops > MIN_DROPS, f"only {outcome.drops} drops in {outcome.cuts} cuts"


# --------------------------------------------------------------------------- the suites


# the sync client's own sequenceAck thread may hit the socket the proxy just reset
@pytest.mark.filterwarnings(
    r"ignore:Exception in thread .*\(sequence_id_ack_periodically\)"
    ":pytest.PytestUnhandledThreadExceptionWarning"
)
async def test_python_sdk_clients_survive_drops(drop_server: Server) -> None:
    fleet = PythonFleet(PY_AIO_CLIENTS, PY_SYNC_CLIENTS)
    outcome = await run_drops(drop_server, "dropspy", fleet, fleet.size)
    assert_exact(outcome)


def _node_problem() -> str | None:
    if shutil.which("node") is None:
        return "Node.js is not on PATH; install Node.js 20+ to run the JavaScript SDK tests"
    for package in ("@azure/web-pubsub-client", "ws"):
        if not (NODE_DIR / "node_modules" / package / "package.json").is_file():
            return f"{package} is missing; run `npm ci --prefix tests/node` first"
    return None


@pytest.fixture
def node_stderr(tmp_path: Path) -> Iterator[IO[bytes]]:
    with open(tmp_path / "node.stderr", "wb") as stderr:
        yield stderr


@pytest.mark.node
async def test_js_sdk_clients_survive_drops(drop_server: Server, node_stderr: IO[bytes]) -> None:
    problem = _node_problem()
    if problem is not None:
        pytest.fail(problem, pytrace=False)
    fleet = NodeFleet(JS_CLIENTS, node_stderr)
    outcome = await run_drops(drop_server, "dropsjs", fleet, fleet.size)
    assert_exact(outcome)
    assert fleet.unexpected == []
