"""One node's server, assembled in one place: :func:`build` makes the parts, :func:`serve` runs
them until a signal stops it.

The parts, inside out: the engine (in-memory broker and presence; the Redis engine of
:mod:`hubbub.broker.redis` when ``engine.redis_url`` is set, started before the port listens
and closed, deregistering the node, after its connections), the event handlers' client
(upstream), the node, the service, the REST rulebook, the fast lane (unless
``server.fast_lane`` is off), the upgraded sockets and the Web PubSub endpoint over them, the
aiohttp application with the REST routes, health and metrics, the runner that bounds request
sizes (:class:`~hubbub.server.limits.Runner`), the request heads' deadline, and the listener
with a :class:`~hubbub.server.port.Port` per connection. Stopping closes them in the opposite
order: the lane's connections and every client (close frames, a grace period for the
answers), then the timers, the upstream client and the engine.

What is still to come attaches here: an admin API and dashboard are more routes on the same
application (:func:`build`), Socket.IO and MQTT more handshake modules on the same
:class:`~hubbub.server.socket.Sockets` (:func:`build`), TLS an ``ssl`` context for the listener
(:func:`_listen`, passed on to :func:`~hubbub.server.port.listen`).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from dataclasses import dataclass, replace

from aiohttp import web

from hubbub.broker.base import Broker
from hubbub.broker.memory import MemoryBroker
from hubbub.broker.redis import RedisBroker, RedisSettings
from hubbub.config import Config, url_host
from hubbub.errors import ConfigError
from hubbub.metrics import engine_state, render, watch_engine
from hubbub.node import Node
from hubbub.server.errors import count_errors
from hubbub.server.fastlane import FastLane
from hubbub.server.limits import MAX_BODY_BYTES, Runner
from hubbub.server.port import REQUEST_HEADS, RequestHeads, listen, request_heads
from hubbub.server.rest import RULES, SERVICE, api_middleware, routes
from hubbub.server.restrules import RestRules
from hubbub.server.socket import Sockets
from hubbub.server.websocket import ClientEndpoint
from hubbub.service import Service
from hubbub.upstream import HttpUpstream

__all__ = ["NODE", "Listening", "Parts", "build", "build_app", "serve"]

NODE = web.AppKey("node", Node)


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
    """``http://host:port`` of every address it listens on."""
    node_id: str | None = None
    """The node's id in its cluster; None for a single node (the in-memory engine)."""


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition."""
    return web.Response(body=render(), content_type="text/plain", charset="utf-8")


def build(config: Config) -> Parts:
    """Make the parts of one node and wire them together (nothing runs yet)."""
    cluster = _cluster(config) if config.redis_url is not None else None
    broker: Broker = cluster if cluster is not None else MemoryBroker()
    upstream = HttpUpstream(config, timeout=config.upstream_timeout_seconds)
    node = Node(config, broker, upstream, cluster=cluster)
    service = Service(config, broker, node.presence, cluster)
    rules = RestRules(config.access_keys, config.http_keep_alive_seconds)
    lane = FastLane(service, rules) if config.fast_lane else None
    heads = RequestHeads(config.request_head_timeout_seconds)
    sockets = Sockets(config.max_outbound_bytes)
    endpoint = ClientEndpoint(node, sockets)
    app = web.Application(
        middlewares=[request_heads, api_middleware], client_max_size=MAX_BODY_BYTES
    )
    app[NODE] = node
    app[SERVICE] = service
    app[RULES] = rules
    app[REQUEST_HEADS] = heads
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
    reuse_port: bool = False,
) -> None:
    """Run one node until ``stop`` is set (by default: until SIGINT or SIGTERM).

    Args:
        config: the node's configuration; port 0 takes any free port.
        started: called once the node listens.
        stop: set it to stop the node.
        reuse_port: listen with ``SO_REUSEPORT``, sharing the port with the other node
            processes of the machine (``serve --workers``).

    Raises:
        ConfigError: the node cannot listen on the configured address.
    """
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    parts = build(config)
    runner = Runner(
        parts.app,
        access_log=None,
        handle_signals=False,
        keepalive_timeout=parts.rules.keep_alive_seconds,
    )
    await runner.setup()
    try:
        listener = await _listen(runner, config, parts.lane, reuse_port)
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(
            f"cannot listen on {url_host(config.host)}:{config.port}: {exc.strerror or exc}"
        ) from exc
    bound = replace(config, port=listener.sockets[0].getsockname()[1])  # the one of port 0
    if started is not None:
        addresses = dict.fromkeys(
            f"http://{url_host(sock.getsockname()[0])}:{bound.port}" for sock in listener.sockets
        )
        node_id = parts.cluster.node_id if parts.cluster is not None else None
        started(Listening(bound, list(addresses), node_id))
    await stop.wait()
    listener.close()
    await runner.cleanup()


async def _listen(
    runner: web.AppRunner, config: Config, lane: FastLane | None, reuse_port: bool = False
) -> asyncio.Server:
    """Listen on the configured address; port 0 becomes one free port on every address."""
    listener = await listen(runner, config.host, config.port, lane, reuse_port=reuse_port)
    if len({sock.getsockname()[1] for sock in listener.sockets}) > 1:
        # Port 0 on several addresses (IPv4 and IPv6): each got its own; take the first's.
        port = listener.sockets[0].getsockname()[1]
        listener.close()
        await listener.wait_closed()
        listener = await listen(runner, config.host, port, lane, reuse_port=reuse_port)
    return listener
