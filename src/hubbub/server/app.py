"""The aiohttp application of one node: client endpoint, REST API, health."""

from __future__ import annotations

from aiohttp import web

from hubbub.broker.memory import MemoryBroker, MemoryPresence
from hubbub.config import Config
from hubbub.metrics import render
from hubbub.node import Node
from hubbub.server.errors import count_errors
from hubbub.server.fastlane import FastLane
from hubbub.server.limits import MAX_BODY_BYTES
from hubbub.server.port import REQUEST_HEADS, RequestHeads, request_heads
from hubbub.server.rest import ACCESS_KEYS, SERVICE, api_middleware, routes
from hubbub.server.websocket import ClientEndpoint
from hubbub.service import Service
from hubbub.upstream import HttpUpstream

__all__ = ["FAST_LANE", "NODE", "build_app"]

NODE = web.AppKey("node", Node)
FAST_LANE = web.AppKey("fast_lane", FastLane)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition."""
    return web.Response(body=render(), content_type="text/plain", charset="utf-8")


def build_app(config: Config) -> web.Application:
    """Wire an in-memory engine, a node, the service and the HTTP routes together."""
    broker = MemoryBroker()
    upstream = HttpUpstream(config, timeout=config.upstream_timeout_seconds)
    node = Node(config, broker, upstream)
    presence = MemoryPresence(node.hubs)
    app = web.Application(
        middlewares=[request_heads, api_middleware], client_max_size=MAX_BODY_BYTES
    )
    app[NODE] = node
    heads = app[REQUEST_HEADS] = RequestHeads(config.request_head_timeout_seconds)
    service = Service(config, broker, presence)
    app[SERVICE] = service
    lane = app[FAST_LANE] = FastLane(service, config.access_keys, config.http_keep_alive_seconds)
    app[ACCESS_KEYS] = config.access_keys
    endpoint = ClientEndpoint(node)
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

    async def start_engine(app: web.Application) -> None:
        await broker.start(node)

    async def close_connections(app: web.Application) -> None:
        lane.close()
        await endpoint.shut_down()

    async def stop_engine(app: web.Application) -> None:
        heads.close()
        endpoint.close_all()
        await endpoint.keepalive.close()
        await upstream.close()
        await broker.close()

    app.on_response_prepare.append(count_errors)
    app.on_startup.append(start_engine)
    app.on_shutdown.append(close_connections)
    app.on_cleanup.append(stop_engine)
    return app
