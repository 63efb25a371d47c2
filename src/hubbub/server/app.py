"""One node's server, assembled in one place: :func:`build` makes the parts, :func:`serve` runs
them until a signal stops it.

The parts, inside out: the engine (in-memory broker and presence; the Redis engine of
:mod:`hubbub.broker.redis` when ``engine.redis_url`` is set, started before the port listens
and closed, deregistering the node, after its connections), the event handlers' client
(upstream), the node, the service, the policy (network rules, limits, Entra ID:
:mod:`hubbub.policy`), the REST rulebook, the fast lane (unless ``server.fast_lane`` is off),
the upgraded sockets and the Web PubSub endpoint over them, the
aiohttp application with the REST routes, health and metrics, the runner that bounds request
sizes (:class:`~hubbub.server.limits.Runner`), the request heads' deadline, and the listener
with a :class:`~hubbub.server.port.Port` per connection (with ``network.rest_port``, two
listeners: client connections on one, REST and metrics on the other, each answering 404 for
the other's traffic). Stopping closes them in the opposite order: the lane's connections and
every client (close frames, a grace period for the answers), then the timers, the upstream
client and the engine.

What is still to come attaches here: an admin API and dashboard are more routes on the same
application (:func:`build`), Socket.IO and MQTT more handshake modules on the same
:class:`~hubbub.server.socket.Sockets` (:func:`build`).

With a certificate and key configured the listeners serve TLS (``https`` and ``wss``;
:mod:`hubbub.server.tls`). A node given a way to load its configuration again
re-reads it on SIGHUP and when the file changes, and applies what may change live
(:mod:`hubbub.server.live`); the certificate is reloaded when its files change.
"""

from __future__ import annotations

import asyncio
import signal
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from aiohttp import web

from hubbub.broker.base import Broker
from hubbub.broker.memory import MemoryBroker
from hubbub.broker.redis import RedisBroker, RedisSettings
from hubbub.config import Config, url_host
from hubbub.core.acl import TrafficKind
from hubbub.errors import ConfigError
from hubbub.metrics import engine_state, render, watch_engine
from hubbub.node import Node
from hubbub.policy import Policy
from hubbub.reloader import ConfigReloader
from hubbub.server.errors import count_errors, error_response
from hubbub.server.fastlane import FastLane
from hubbub.server.limits import MAX_BODY_BYTES, Runner
from hubbub.server.live import LiveNode
from hubbub.server.port import (
    EVERY_KIND,
    REQUEST_HEADS,
    Port,
    RequestHeads,
    listen,
    request_address,
    request_heads,
)
from hubbub.server.rest import RULES, SERVICE, api_middleware, routes
from hubbub.server.restrules import RestRules
from hubbub.server.socket import Sockets
from hubbub.server.tls import server_context
from hubbub.server.websocket import ClientEndpoint
from hubbub.service import Service
from hubbub.upstream import HttpUpstream

__all__ = ["NODE", "POLICY", "Listening", "Parts", "build", "build_app", "serve"]

NODE = web.AppKey("node", Node)
POLICY = web.AppKey("policy", Policy)
KEY_REFRESH = web.AppKey("entra_key_refresh", asyncio.Task[None])
KEY_REFRESH_SECONDS = 86400.0
"""How often the Entra signing keys of a JWKS URL are read again (besides unknown key ids)."""
CLIENT_KINDS = frozenset((TrafficKind.CLIENT,))
"""What the client listener serves when REST has its own (``network.rest_port``)."""
REST_KINDS = frozenset((TrafficKind.REST, TrafficKind.TRACE))
"""What the REST listener serves: REST, metrics (and the live trace, once it exists)."""


@dataclass(frozen=True)
class Parts:
    """Everything one node's server is made of (see :func:`build`)."""

    config: Config
    broker: Broker
    """The in-memory engine, or the Redis one (``cluster``) when ``engine.redis_url`` is set."""
    cluster: RedisBroker | None
    upstream: HttpUpstream
    node: Node
    service: Service
    rules: RestRules
    lane: FastLane | None
    """None when ``server.fast_lane`` is off: aiohttp answers every request."""
    heads: RequestHeads
    sockets: Sockets
    endpoint: ClientEndpoint
    app: web.Application


@dataclass(frozen=True)
class Listening:
    """A node that listens: its configuration (with the port it got) and its addresses."""

    config: Config
    addresses: list[str]
    """``http(s)://host:port`` of every address it listens on."""
    reload: Callable[[], bool] = field(default=lambda: False, compare=False)
    """Load the configuration again now and apply what may change live (as SIGHUP does);
    False when it is refused or changes nothing."""
    live: LiveNode | None = field(default=None, compare=False)
    """The running node's live settings (its configuration now, the certificate's reload)."""
    rest_addresses: list[str] = field(default_factory=list)
    """The REST listener's addresses, when REST has one of its own (``network.rest_port``)."""
    node_id: str | None = None
    """The node's id in its cluster; None for a single node (the in-memory engine)."""


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition: on the REST listener when REST has one of its own, and to
    the addresses the network rules allow REST from."""
    port = request.transport
    if isinstance(port, Port) and not port.serves(TrafficKind.REST):
        return error_response(404, "metrics are served on the REST port (network.rest_port)")
    policy = request.app[POLICY]
    if policy.needs_address:
        denied = policy.check_network(TrafficKind.REST, request_address(request, policy))
        if denied is not None:
            return error_response(denied.status, denied.message)
    return web.Response(body=render(), content_type="text/plain", charset="utf-8")


def build(config: Config) -> Parts:
    """Make the parts of one node and wire them together (nothing runs yet)."""
    cluster = _cluster(config) if config.redis_url is not None else None
    broker: Broker = cluster if cluster is not None else MemoryBroker()
    upstream = HttpUpstream(config, timeout=config.upstream_timeout_seconds)
    node = Node(config, broker, upstream, cluster=cluster)
    service = Service(config, broker, node.presence, cluster)
    policy = Policy(config)
    rules = RestRules(config.access_keys, config.http_keep_alive_seconds, policy)
    lane = FastLane(service, rules) if config.fast_lane else None
    heads = RequestHeads(config.request_head_timeout_seconds)
    sockets = Sockets(config.max_outbound_bytes)
    endpoint = ClientEndpoint(node, sockets, policy)
    app = web.Application(
        middlewares=[request_heads, api_middleware], client_max_size=MAX_BODY_BYTES
    )
    app[NODE] = node
    app[SERVICE] = service
    app[RULES] = rules
    app[REQUEST_HEADS] = heads
    app[POLICY] = policy
    app.add_routes(
        [
            web.get("/client/hubs/{hub}", endpoint.handle, allow_head=False),
            web.get("/client/hubs/{hub}/", endpoint.handle, allow_head=False),
            web.get("/client/", endpoint.handle, allow_head=False),
            web.get("/client", endpoint.handle, allow_head=False),
            web.get("/metrics", metrics),
            *routes(),
        ]
    )
    parts = Parts(
        config, broker, cluster, upstream, node, service, rules, lane, heads, sockets, endpoint, app
    )
    app.on_response_prepare.append(count_errors)
    app.on_startup.append(lambda app: _start(parts))
    app.on_shutdown.append(lambda app: _close_connections(parts))
    app.on_cleanup.append(lambda app: _stop(parts))
    return parts


def _cluster(config: Config) -> RedisBroker:
    """The Redis engine of a node of a cluster (a node id of its own, fresh per process)."""
    assert config.redis_url is not None
    settings = RedisSettings(
        url=config.redis_url,
        session_timeout_seconds=config.session_timeout_seconds,
        replicate_sessions=config.session_replication,
    )
    cluster = RedisBroker(settings)
    engine_state(cluster.state)
    cluster.on_state_change(engine_state)
    watch_engine(cluster.stats)
    return cluster


def build_app(config: Config) -> web.Application:
    """The aiohttp application of :func:`build` (for running it under another listener)."""
    return build(config).app


async def _start(parts: Parts) -> None:
    await parts.broker.start(parts.node)
    policy = parts.app[POLICY]
    entra = policy.entra
    if entra is not None and entra.validator.settings.verify_signatures:
        await entra.load()  # a failure is logged; tokens read the keys again (1 s on, doubling)
    parts.app[KEY_REFRESH] = asyncio.get_running_loop().create_task(_refresh_keys(policy))


async def _refresh_keys(policy: Policy, seconds: float = KEY_REFRESH_SECONDS) -> None:
    """Read the Entra keys of a JWKS URL again every ``seconds`` (Entra rolls its keys): the
    keys of whatever ``[auth.entra]`` says now, a reload may have changed it."""
    while True:
        await asyncio.sleep(seconds)
        entra = policy.entra
        if entra is not None and entra.jwks_url and entra.validator.settings.verify_signatures:
            await entra.load()


HAND_OVER_SECONDS = 5.0
"""How long a stopping node of a cluster waits for its reliable clients to recover their
sessions on other nodes (the SDKs try at once)."""


async def _close_connections(parts: Parts) -> None:
    if parts.lane is not None:
        parts.lane.close()
    await parts.endpoint.shut_down()
    if parts.cluster is not None:
        await parts.node.hand_over_sessions(HAND_OVER_SECONDS)


async def _stop(parts: Parts) -> None:
    refresh = parts.app.get(KEY_REFRESH)
    if refresh is not None:
        refresh.cancel()
    parts.heads.close()
    parts.sockets.close_all()
    await parts.sockets.close()
    await parts.upstream.close()
    await parts.broker.close()


async def serve(
    config: Config,
    *,
    started: Callable[[Listening], None] | None = None,
    stop: asyncio.Event | None = None,
    load: Callable[[], Config] | None = None,
    watch: str | None = None,
    poll_seconds: float = 2.0,
    reuse_port: bool = False,
) -> None:
    """Run one node until ``stop`` is set (by default: until SIGINT or SIGTERM).

    Args:
        config: the node's configuration; port 0 takes any free port.
        started: called once the node listens.
        stop: set it to stop the node; without it, SIGINT and SIGTERM stop the node and
            SIGHUP reloads its configuration and certificate.
        load: loads the configuration again from the same sources (file, environment, flags),
            for a reload; without it a reload only looks at the certificate's files.
        watch: the configuration file, reloaded when it changes.
        poll_seconds: how often the configuration and certificate files are looked at.
        reuse_port: listen with ``SO_REUSEPORT``, sharing the port with the other node
            processes of the machine (``serve --workers``).

    Raises:
        ConfigError: the node cannot listen on the configured address, or its certificate
            does not load.
    """
    signals = stop is None
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    tls = _tls_context(config)
    parts = build(config)
    runner = Runner(
        parts.app,
        access_log=None,
        handle_signals=False,
        keepalive_timeout=parts.rules.keep_alive_seconds,
    )
    await runner.setup()
    rest_port = config.network.rest_port
    try:
        listener = await _listen(
            runner,
            config,
            parts.lane if rest_port is None else None,
            tls,
            kinds=EVERY_KIND if rest_port is None else CLIENT_KINDS,
            reuse_port=reuse_port,
        )
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(
            f"cannot listen on {url_host(config.host)}:{config.port}: {exc.strerror or exc}"
        ) from exc
    bound = replace(config, port=listener.sockets[0].getsockname()[1])  # the one of port 0
    rest_listener = None
    if rest_port is not None:
        rest_host = config.network.rest_host or config.host
        try:
            rest_listener = await listen(
                runner,
                rest_host,
                rest_port,
                parts.lane,
                tls,
                config.request_head_timeout_seconds,
                kinds=REST_KINDS,
                reuse_port=reuse_port,
            )
        except OSError as exc:
            listener.close()
            await runner.cleanup()
            raise ConfigError(
                f"cannot listen on {url_host(rest_host)}:{rest_port} (network.rest_port): "
                f"{exc.strerror or exc}"
            ) from exc
    live = LiveNode(replace(parts, config=bound), tls)
    reloader = ConfigReloader(
        bound,
        _same_port(load, config.port, bound.port) if load is not None else lambda: live.config,
        live.apply,
        path=watch,
        poll_seconds=poll_seconds,
        certificates=live.check_certificate if tls is not None else None,
    )
    reloader.start(signals=signals)
    if started is not None:
        scheme = "https" if tls is not None else "http"
        addresses = dict.fromkeys(
            f"{scheme}://{url_host(sock.getsockname()[0])}:{bound.port}"
            for sock in listener.sockets
        )
        rest_addresses = dict.fromkeys(
            f"{scheme}://{url_host(sock.getsockname()[0])}:{sock.getsockname()[1]}"
            for sock in (rest_listener.sockets if rest_listener is not None else ())
        )
        node_id = parts.cluster.node_id if parts.cluster is not None else None
        started(
            Listening(bound, list(addresses), reloader.reload, live, list(rest_addresses), node_id)
        )
    try:
        await stop.wait()
    finally:
        await reloader.stop()
        if rest_listener is not None:
            rest_listener.close()
        listener.close()
        await runner.cleanup()


def _same_port(load: Callable[[], Config], asked: int, bound: int) -> Callable[[], Config]:
    """``load``, with the port a node asked for (0: any) read as the one it got."""

    def loaded() -> Config:
        config = load()
        return replace(config, port=bound) if config.port == asked else config

    return loaded


def _tls_context(config: Config) -> ssl.SSLContext | None:
    """The listeners' TLS context, or None for plain http.

    Raises:
        ConfigError: the certificate, key or client CA does not load.
    """
    if config.tls_cert_file is None or config.tls_key_file is None:
        return None
    try:
        return server_context(
            config.tls_cert_file,
            config.tls_key_file,
            client_auth=config.tls_client_auth,
            client_ca_file=config.tls_client_ca_file,
        )
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise ConfigError(f"server.tls_cert_file: cannot serve TLS: {exc}") from exc


async def _listen(
    runner: web.AppRunner,
    config: Config,
    lane: FastLane | None,
    tls: ssl.SSLContext | None = None,
    *,
    kinds: frozenset[TrafficKind] = EVERY_KIND,
    reuse_port: bool = False,
) -> asyncio.Server:
    """Listen on the configured address; port 0 becomes one free port on every address.

    A TLS handshake has the time a request head has (``request_head_timeout_seconds``).
    """
    timeout = config.request_head_timeout_seconds
    listener = await listen(
        runner,
        config.host,
        config.port,
        lane,
        tls,
        timeout,
        kinds=kinds,
        reuse_port=reuse_port,
    )
    if len({sock.getsockname()[1] for sock in listener.sockets}) > 1:
        # Port 0 on several addresses (IPv4 and IPv6): each got its own; take the first's.
        port = listener.sockets[0].getsockname()[1]
        listener.close()
        await listener.wait_closed()
        listener = await listen(
            runner, config.host, port, lane, tls, timeout, kinds=kinds, reuse_port=reuse_port
        )
    return listener
