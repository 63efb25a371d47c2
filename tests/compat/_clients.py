"""Helpers for the compat suites: official-SDK and plain WebSocket clients, REST calls.

Every wait has a deadline. To show that a message did *not* arrive, a test sends a
later marker and inspects everything the client saw up to that marker (frames
on one connection are delivered in order, so anything sent earlier arrives first).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from email.message import Message
from typing import Any, Generic, Protocol, TypeVar

import jwt
from azure.core.pipeline.policies import RetryMode
from azure.messaging.webpubsubclient import WebPubSubClient, WebPubSubClientCredential
from azure.messaging.webpubsubclient.aio import WebPubSubClient as AioWebPubSubClient
from azure.messaging.webpubsubclient.models import (
    CallbackType,
    OnConnectedArgs,
    OnDisconnectedArgs,
    OnGroupDataMessageArgs,
    OnServerDataMessageArgs,
    WebPubSubProtocolType,
)
from azure.messaging.webpubsubservice import WebPubSubServiceClient
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

TIMEOUT = 5.0
API_VERSION = "2024-12-01"
JSON_SUBPROTOCOL = "json.webpubsub.azure.v1"
RELIABLE_SUBPROTOCOL = "json.reliable.webpubsub.azure.v1"

T = TypeVar("T")

# websockets >= 16 warns unless direct (non-context-manager) use is requested explicitly.
_DIRECT_CONNECT: dict[str, Any] = (
    {"legacy": True} if "legacy" in inspect.signature(connect).parameters else {}
)


class ServerLike(Protocol):
    """What the `server` fixture offers."""

    @property
    def endpoint(self) -> str: ...

    @property
    def ws_endpoint(self) -> str: ...

    @property
    def access_key(self) -> str: ...

    @property
    def secondary_key(self) -> str: ...

    @property
    def connection_string(self) -> str: ...

    @property
    def secondary_connection_string(self) -> str: ...


# ----------------------------------------------------------- waiting


class Inbox(Generic[T]):
    """Thread-safe, append-only record of things received, with deadline waits."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._items: list[T] = []
        self._cv = threading.Condition()

    def put(self, item: T) -> None:
        with self._cv:
            self._items.append(item)
            self._cv.notify_all()

    def snapshot(self) -> list[T]:
        with self._cv:
            return list(self._items)

    def wait_for(self, pred: Callable[[T], bool] = lambda _: True, timeout: float = TIMEOUT) -> T:
        """Return the first item matching `pred`, waiting up to `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                for item in self._items:
                    if pred(item):
                        return item
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"{self.name}: nothing matching within {timeout}s; got {self._items!r}"
                    )
                self._cv.wait(remaining)

    def wait_count(self, count: int, timeout: float = TIMEOUT) -> list[T]:
        """Wait until at least `count` items arrived and return them all."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while len(self._items) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"{self.name}: wanted {count} items within {timeout}s; got {self._items!r}"
                    )
                self._cv.wait(remaining)
            return list(self._items)

    def until(self, pred: Callable[[T], bool], timeout: float = TIMEOUT) -> list[T]:
        """Wait for an item matching `pred`; return all items up to and including it."""
        marker = self.wait_for(pred, timeout)
        items = self.snapshot()
        return items[: next(i for i, item in enumerate(items) if item is marker) + 1]


class AsyncInbox(Generic[T]):
    """Inbox for the asyncio SDK (handlers and waiters share one event loop)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._items: list[T] = []
        self._changed = asyncio.Event()

    def put(self, item: T) -> None:
        self._items.append(item)
        self._changed.set()

    def snapshot(self) -> list[T]:
        return list(self._items)

    async def wait_for(
        self, pred: Callable[[T], bool] = lambda _: True, limit: float = TIMEOUT
    ) -> T:
        deadline = time.monotonic() + limit
        while True:
            for item in self._items:
                if pred(item):
                    return item
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"{self.name}: nothing matching within {limit}s; got {self._items!r}"
                )
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                pass

    async def until(self, pred: Callable[[T], bool], limit: float = TIMEOUT) -> list[T]:
        marker = await self.wait_for(pred, limit)
        items = self.snapshot()
        return items[: next(i for i, item in enumerate(items) if item is marker) + 1]


def wait_until(cond: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    """Poll a cheap condition (e.g. a REST existence check) until it holds or time is up."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for: {what}")
        time.sleep(0.02)


def is_data(frame: dict[str, Any], value: Any) -> bool:
    """True for a JSON-subprotocol data message carrying `value`."""
    return frame.get("type") == "message" and frame.get("data") == value


def data_of(frames: Iterable[dict[str, Any]]) -> list[Any]:
    """The `data` of every data message among JSON-subprotocol frames."""
    return [f.get("data") for f in frames if f.get("type") == "message"]


# ----------------------------------------------------------- REST


def service(
    server: ServerLike, hub: str, *, secondary: bool = False, **kwargs: Any
) -> WebPubSubServiceClient:
    conn = server.secondary_connection_string if secondary else server.connection_string
    return WebPubSubServiceClient.from_connection_string(conn, hub=hub, **kwargs)


def client_url(
    svc: WebPubSubServiceClient,
    *,
    user_id: str | None = None,
    roles: list[str] | None = None,
    groups: list[str] | None = None,
    minutes_to_expire: int = 60,
) -> str:
    """A client access URL minted by the server SDK."""
    token = svc.get_client_access_token(
        user_id=user_id, roles=roles or [], groups=groups or [], minutes_to_expire=minutes_to_expire
    )
    return str(token["url"])


def rest_token(url: str, key: str, lifetime: int = 60) -> str:
    """A data-plane bearer token, signed the way the SDKs sign it (aud = full URL)."""
    claims = {"aud": url, "exp": int(time.time()) + lifetime}
    return jwt.encode(claims, key, algorithm="HS256")


@dataclass
class RestResponse:
    status: int
    headers: Message
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def rest_url(
    server: ServerLike,
    path: str,
    query: list[tuple[str, str]] | None = None,
    api_version: str | None = API_VERSION,
) -> str:
    items = list(query or [])
    if api_version is not None:
        items.append(("api-version", api_version))
    qs = urllib.parse.urlencode(items, quote_via=urllib.parse.quote)
    return server.endpoint + path + (f"?{qs}" if qs else "")


def rest_call(
    server: ServerLike,
    method: str,
    url: str,
    *,
    body: bytes | None = None,
    content_type: str | None = None,
    key: str | None = None,
    auth: bool = True,
    token: str | None = None,
) -> RestResponse:
    """Call the data plane directly (for routes the SDK lacks and for error cases)."""
    headers = {"Accept": "application/json"}
    if auth:
        headers["Authorization"] = "Bearer " + (token or rest_token(url, key or server.access_key))
    if content_type is not None:
        headers["Content-Type"] = content_type
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with _OPENER.open(req, timeout=TIMEOUT) as resp:
            return RestResponse(resp.status, resp.headers, resp.read())
    except urllib.error.HTTPError as err:
        return RestResponse(err.code, err.headers, err.read())


def hub_path(hub: str, *segments: str) -> str:
    quoted = "/".join(urllib.parse.quote(s, safe=":") for s in segments)
    return f"/api/hubs/{hub}" + (f"/{quoted}" if quoted else "")


def assert_error(resp: RestResponse, status: int) -> dict[str, Any]:
    """Assert an error status with the JSON ErrorDetail body and x-ms-error-code header."""
    assert resp.status == status, (resp.status, resp.body)
    body = resp.json()
    assert isinstance(body, dict), body
    body = body.get("error", body)  # api-version refusals wrap it, as ASP.NET's do
    assert isinstance(body, dict), body
    assert isinstance(body.get("code"), str) and body["code"], body
    assert isinstance(body.get("message"), str), body
    assert resp.headers.get("x-ms-error-code") == body["code"], (dict(resp.headers), body)
    return body


# ----------------------------------------------------------- SDK clients


@dataclass
class SdkClient:
    """A sync `azure-messaging-webpubsubclient` client with every event recorded.

    `wire` holds each frame the SDK parsed, in arrival order (the SDK calls its
    handlers on separate threads, so handler order is not arrival order).
    """

    client: WebPubSubClient
    wire: Inbox[dict[str, Any]] = field(default_factory=lambda: Inbox("wire"))
    connected: Inbox[OnConnectedArgs] = field(default_factory=lambda: Inbox("connected"))
    disconnected: Inbox[OnDisconnectedArgs] = field(default_factory=lambda: Inbox("disconnected"))
    server_messages: Inbox[OnServerDataMessageArgs] = field(
        default_factory=lambda: Inbox("server-message")
    )
    group_messages: Inbox[OnGroupDataMessageArgs] = field(
        default_factory=lambda: Inbox("group-message")
    )
    stopped: Inbox[bool] = field(default_factory=lambda: Inbox("stopped"))

    def __post_init__(self) -> None:
        tap_protocol(self.client, self.wire.put)
        self.client.subscribe(CallbackType.CONNECTED, self.connected.put)
        self.client.subscribe(CallbackType.DISCONNECTED, self.disconnected.put)
        self.client.subscribe(CallbackType.SERVER_MESSAGE, self.server_messages.put)
        self.client.subscribe(CallbackType.GROUP_MESSAGE, self.group_messages.put)
        self.client.subscribe(CallbackType.STOPPED, lambda: self.stopped.put(True))

    def open(self) -> OnConnectedArgs:
        self.client.open()
        return self.connected.wait_for()

    @property
    def connection_id(self) -> str:
        return self.connected.wait_for().connection_id

    def close(self) -> None:
        self.client.close()

    def data_until(self, marker: Any, timeout: float = TIMEOUT) -> list[Any]:
        """Data of every message received up to and including the one carrying `marker`."""
        return data_of(self.wire.until(lambda f: is_data(f, marker), timeout))


def tap_protocol(client: Any, sink: Callable[[dict[str, Any]], None]) -> None:
    """Record every text frame the SDK parses, in arrival order, before it dispatches it."""
    protocol = client._protocol
    parse = protocol.parse_messages

    def tapped(raw: str) -> Any:
        try:
            sink(json.loads(raw))
        except (TypeError, ValueError):
            sink({"unparsable": raw})
        return parse(raw)

    protocol.parse_messages = tapped


# The sync SDK sends, then starts waiting on a condition variable that the reader thread
# notifies when the ack (or the socket open) arrives; an answer that comes back before the
# wait starts is missed and the wait runs to its full timeout (the outcome is still right).
# Short timeouts keep that from costing seconds; loopback answers take milliseconds.
SDK_WAIT = 1.0


def sdk_options(reconnect: bool = False) -> dict[str, Any]:
    """Fast-failing SDK options: no message retries, short ack/start timeouts."""
    return {
        "message_retry_total": 0,
        "reconnect_retry_total": 3 if reconnect else 0,
        "reconnect_retry_backoff_factor": 0.1,
        "reconnect_retry_mode": RetryMode.Fixed,
        "ack_timeout": SDK_WAIT,
        "start_timeout": SDK_WAIT,
    }


@dataclass
class AioSdkClient:
    """The asyncio `azure-messaging-webpubsubclient` client with every event recorded."""

    client: AioWebPubSubClient
    wire: AsyncInbox[dict[str, Any]] = field(default_factory=lambda: AsyncInbox("wire"))
    connected: AsyncInbox[OnConnectedArgs] = field(default_factory=lambda: AsyncInbox("connected"))
    disconnected: AsyncInbox[OnDisconnectedArgs] = field(
        default_factory=lambda: AsyncInbox("disconnected")
    )
    server_messages: AsyncInbox[OnServerDataMessageArgs] = field(
        default_factory=lambda: AsyncInbox("server-message")
    )
    group_messages: AsyncInbox[OnGroupDataMessageArgs] = field(
        default_factory=lambda: AsyncInbox("group-message")
    )

    async def start(self) -> OnConnectedArgs:
        tap_protocol(self.client, self.wire.put)
        await self.client.subscribe(CallbackType.CONNECTED, _async_put(self.connected))
        await self.client.subscribe(CallbackType.DISCONNECTED, _async_put(self.disconnected))
        await self.client.subscribe(CallbackType.SERVER_MESSAGE, _async_put(self.server_messages))
        await self.client.subscribe(CallbackType.GROUP_MESSAGE, _async_put(self.group_messages))
        await self.client.open()
        return await self.connected.wait_for()

    async def data_until(self, marker: Any, limit: float = TIMEOUT) -> list[Any]:
        return data_of(await self.wire.until(lambda f: is_data(f, marker), limit))


def _async_put(inbox: AsyncInbox[Any]) -> Callable[[Any], Any]:
    async def handler(args: Any) -> None:
        inbox.put(args)

    return handler


# ----------------------------------------------------------- plain sockets


class RawClient:
    """A `websockets` client; `frames` records every text (str) or binary (bytes) frame."""

    def __init__(self, url: str, subprotocols: list[str] | None = None) -> None:
        self.ws: ClientConnection = connect(
            url,
            subprotocols=subprotocols or None,  # type: ignore[arg-type]
            open_timeout=TIMEOUT,
            close_timeout=2,
            proxy=None,
            ping_interval=None,
            max_size=None,
            **_DIRECT_CONNECT,
        )
        self.frames: Inbox[str | bytes] = Inbox("frames")
        self.closed: Inbox[tuple[int | None, str | None]] = Inbox("closed")
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            for message in self.ws:
                self.frames.put(message)
        except ConnectionClosed:
            pass
        finally:
            self.closed.put((self.ws.close_code, self.ws.close_reason))

    def frames_until(self, marker: str | bytes, timeout: float = TIMEOUT) -> list[str | bytes]:
        return self.frames.until(lambda f: f == marker, timeout)

    def close(self) -> None:
        self.ws.close()


class JsonClient(RawClient):
    """A plain socket speaking a JSON subprotocol; parses frames and the connected event."""

    def __init__(self, url: str, subprotocol: str = JSON_SUBPROTOCOL) -> None:
        super().__init__(url, [subprotocol])
        first = self.frames.wait_for()
        assert isinstance(first, str), first
        self.connected: dict[str, Any] = json.loads(first)
        assert self.connected.get("type") == "system", self.connected
        assert self.connected.get("event") == "connected", self.connected
        self.connection_id: str = self.connected["connectionId"]
        self.user_id: str | None = self.connected.get("userId")

    def json_frames(self) -> list[dict[str, Any]]:
        return [json.loads(f) for f in self.frames.snapshot()[1:] if isinstance(f, str)]

    def wait_json(self, pred: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        frame = self.frames.wait_for(lambda f: isinstance(f, str) and pred(json.loads(f)))
        return dict(json.loads(frame))

    def data_until(self, marker: Any, timeout: float = TIMEOUT) -> list[Any]:
        frames = self.frames.until(
            lambda f: isinstance(f, str) and is_data(json.loads(f), marker), timeout
        )
        return data_of(json.loads(f) for f in frames[1:] if isinstance(f, str))

    def send_json(self, message: dict[str, Any]) -> None:
        self.ws.send(json.dumps(message))


# ----------------------------------------------------------- factory


class Clients:
    """Opens clients for one hub and closes them all at teardown."""

    def __init__(self, server: ServerLike, hub: str) -> None:
        self.server = server
        self.hub = hub
        self.svc = service(server, hub)
        self._open: list[Callable[[], None]] = []

    def url(self, **token: Any) -> str:
        return client_url(self.svc, **token)

    def sdk(
        self,
        *,
        protocol: WebPubSubProtocolType | None = None,
        reconnect: bool = False,
        user_id: str | None = None,
        roles: list[str] | None = None,
        groups: list[str] | None = None,
        url: str | None = None,
        open_now: bool = True,
    ) -> SdkClient:
        """An SDK client; without `url` each (re)connect mints a fresh token."""
        credential = WebPubSubClientCredential(
            (lambda: url)
            if url
            else (lambda: self.url(user_id=user_id, roles=roles, groups=groups))
        )
        extra: dict[str, Any] = {} if protocol is None else {"protocol_type": protocol}
        client = SdkClient(WebPubSubClient(credential, **sdk_options(reconnect), **extra))
        self._open.append(client.close)
        if open_now:
            client.open()
        return client

    def json(
        self,
        *,
        subprotocol: str = JSON_SUBPROTOCOL,
        user_id: str | None = None,
        roles: list[str] | None = None,
        groups: list[str] | None = None,
    ) -> JsonClient:
        client = JsonClient(self.url(user_id=user_id, roles=roles, groups=groups), subprotocol)
        self._open.append(client.close)
        return client

    def raw(
        self,
        *,
        user_id: str | None = None,
        groups: list[str] | None = None,
        url: str | None = None,
    ) -> RawClient:
        client = RawClient(url or self.url(user_id=user_id, groups=groups))
        self._open.append(client.close)
        return client

    def close_all(self) -> None:
        for close in reversed(self._open):
            try:
                close()
            except Exception:  # teardown must close the rest
                pass
        self._open.clear()
        self.svc.close()


# ----------------------------------------------------------- SDK odds and ends


def status_of(pipeline_response: Any, _body: Any, _headers: Any) -> int:
    """`cls=` hook for server-SDK operations: return the HTTP status instead of the result."""
    return int(pipeline_response.http_response.status_code)


def code(result: object) -> int:
    """The status an operation called with `cls=status_of` returned (the SDK types it as None)."""
    assert isinstance(result, int), result
    return result


def members(svc: WebPubSubServiceClient, group: str) -> set[str]:
    """Connection ids currently in `group`, via the paged list route."""
    return {m.connection_id for m in svc.list_connections(group=group)}
