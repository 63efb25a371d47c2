"""The REST sends answered without aiohttp's request machinery.

``POST /api/hubs/{hub}[/users|groups|connections/{name}]/:send`` is the call an app server makes
most: one per message. aiohttp spends most of such a call on request, URL and response objects
(a do-nothing aiohttp route serves about 11,000 calls/s on a 2-core machine), so each
:class:`~hubbub.server.port.Port` first offers a request to the :class:`Sniffer`: httptools
parses its head, and a send that is plain all through is published and answered ``202`` right
here. Plain means: ``api-version`` the only query parameter and one the service answers (every
``:send`` takes each), an ASCII path without percent-escapes, a ``Content-Length`` body within
the limit in a known content type that validates, a bearer token that passes (an access-key
one, or an Entra one whose keys are read), an address the network rules allow (the peer, or
what a trusted proxy forwarded), the hub within its REST rate, HTTP/1.1 keep-alive, no
``Expect``, no message metadata.

Every rule (route, token, ``api-version``, content type, body limit, keep-alive time, the
answer's headers, the error body) is the rulebook's (:mod:`hubbub.server.restrules`), which
aiohttp's handlers (:mod:`hubbub.server.rest`) follow too. Everything that is not plain, and
every request that would be refused, goes to aiohttp byte for byte, which answers it (errors
included, and counts the refusal in the metrics): this module only skips the objects for the
case where all rules pass. Once a
connection has gone to aiohttp it stays there, so answers keep the order of the requests.

Whatever the head alone decides (route, bearer token, content type, length) is decided as soon as
the head is complete: a request with a bad or missing token goes to aiohttp before its body is
read (aiohttp refuses it with 401 there and then), so an unauthenticated body is never kept. The
bytes of a request are gathered once, in one buffer, and its head is parsed once. Bytes that
cannot begin a ``POST`` (another method, or what a body longer than its ``Content-Length``
leaves behind) go to aiohttp at once, not after a head's worth of waiting.

aiohttp does not see a connection until its first request for aiohttp: the lane closes the ones
it alone serves once they have been idle for the keep-alive time, as aiohttp does its own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import NamedTuple

import httptools

from hubbub.core.commands import Target
from hubbub.errors import BadRequestError, ClusterUnavailableError
from hubbub.limits import MAX_LANE_HEAD_BYTES as MAX_HEAD_BYTES
from hubbub.metrics import FAST_SENDS
from hubbub.protocol.messages import DataType
from hubbub.protocol.metadata import HEADER_PREFIX
from hubbub.server.restrules import (
    API_VERSION,
    CACHED_URL_BYTES,
    CACHED_URLS,
    INTERNAL_ERROR,
    SENDS,
    SUPPORTED_VERSIONS,
    RestRules,
    accepted_answer,
    body_allowed,
    data_type,
    keeps_alive,
    payload_of,
    raw_error,
    route,
    send_target,
)
from hubbub.service import SendOptions, Service
from hubbub.types import HubName

__all__ = ["FastLane", "Sniffer"]

log = logging.getLogger("hubbub.rest")

# A request head longer than MAX_HEAD_BYTES is aiohttp's to judge (it answers 414, 431 or 400),
# a body over the limit aiohttp's to refuse (413).

Admitted = tuple[HubName, Target, str, str, DataType]
"""A send whose head the lane accepted: hub, target, name, path and the body's data type."""

_API_VERSION = API_VERSION + "="
_WANTED = frozenset(
    (
        b"authorization",
        b"connection",
        b"content-type",
        b"content-length",
        b"transfer-encoding",
        b"expect",
    )
)
_FORWARDING = frozenset((b"forwarded", b"x-forwarded-for"))
_METADATA = HEADER_PREFIX.encode()
_NO_OPTIONS = SendOptions()


class FastLane:
    """Publishes plain REST sends of one node (shared by every port)."""

    def __init__(self, service: Service, rules: RestRules) -> None:
        self._service = service
        self._rules = rules
        self._sends = _Sends()
        self._keep_alive = rules.keep_alive_seconds
        self._sniffers: set[Sniffer] = set()
        self._sweeper: asyncio.TimerHandle | None = None

    # -- the connections the lane serves --------------------------------------------------------

    def sniffer(
        self, write: Callable[[bytes], None], close: Callable[[], None], peer: str | None = None
    ) -> Sniffer:
        """A sniffer for a new connection from ``peer``, watched for idleness until
        :meth:`forget`."""
        sniffer = Sniffer(self, write, close, peer)
        self._sniffers.add(sniffer)
        if self._sweeper is None:
            self._schedule_sweep()
        return sniffer

    def forget(self, sniffer: Sniffer) -> None:
        """The connection is gone, or aiohttp serves it from now on."""
        self._sniffers.discard(sniffer)

    def _sweep(self) -> None:
        """Close the connections idle for the keep-alive time (checked 4 times per period)."""
        self._sweeper = None
        idle_since = time.monotonic() - self._keep_alive
        for sniffer in [s for s in self._sniffers if s.active <= idle_since]:
            self._sniffers.discard(sniffer)
            sniffer.close()
        if self._sniffers:
            self._schedule_sweep()

    def _schedule_sweep(self) -> None:
        self._sweeper = asyncio.get_running_loop().call_later(self._keep_alive / 4, self._sweep)

    def close(self) -> None:
        """Close every connection only the lane has served (the node is stopping)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        sniffers, self._sniffers = self._sniffers, set()
        for sniffer in sniffers:
            sniffer.close()

    # -- one send -------------------------------------------------------------------------------

    def admit(
        self,
        url: bytes,
        headers: dict[bytes, bytes],
        peer: str | None = None,
        forwarding: list[tuple[bytes, bytes]] | None = None,
    ) -> Admitted | None:
        """Route, token and content type of a send, judged on its head; None: aiohttp answers.

        The rules are the rulebook's; a send is plain when its query is ``api-version`` alone
        and its path is ASCII without percent-escapes (nothing to decode). What the URL says is
        remembered (:class:`_Sends`) only once a request to it passed the token check.
        """
        sends = self._sends
        send = sends.get(url)
        fresh = send is None
        if send is None:
            send = _plain_send(url)
            if send is None:
                return None
        target, path, hub, kind, name = send
        authorization = headers.get(b"authorization")
        policy = self._rules.policy
        address = None
        if policy is not None and policy.needs_address:
            lines = forwarding or []
            address = policy.address(
                peer,
                [v.decode("latin-1") for k, v in lines if k == b"forwarded"],
                [v.decode("latin-1") for k, v in lines if k == b"x-forwarded-for"],
            )
        refusal = self._rules.refusal(
            target,
            "" if authorization is None else authorization.decode("latin-1"),
            address=address,
            count=False,
        )
        if refusal is not None:
            return None  # aiohttp refuses it: the same rule, with the service's answer
        if fresh:
            sends.remember(url, send)
        content_type = headers.get(b"content-type")
        body_type = data_type(None if content_type is None else content_type.decode("latin-1"))
        if hub is None or body_type is None:
            return None
        return hub, kind, name, path, body_type

    def send(self, admitted: Admitted, body: bytes) -> bytes | None:
        """Publish an admitted send and return the ``202`` answer; None: aiohttp must answer."""
        hub, target, name, path, kind = admitted
        try:
            payload = payload_of(kind, body)
        except BadRequestError:
            return None
        try:
            self._service.send_nowait(hub, target, name, payload, _NO_OPTIONS)
        except ClusterUnavailableError:
            return None  # aiohttp answers 503, as for every operation needing the cluster
        except Exception:
            log.error("POST %s failed", path, exc_info=True)
            return raw_error(500, INTERNAL_ERROR)
        FAST_SENDS.inc()
        return accepted_answer()


class _Send(NamedTuple):
    """What the URL of a plain send says."""

    target: str
    """The request target, as sent."""
    path: str
    hub: HubName | None
    """None: not a send the lane serves (another operation, a name the handlers refuse, an
    api-version the service does not answer)."""
    kind: Target
    name: str


def _plain_send(url: bytes) -> _Send | None:
    """What the URL of a send says, by the rulebook's routes and names; None when the URL is
    not plain (aiohttp reads it)."""
    if not url.isascii():
        return None
    target = url.decode("ascii")
    path, _, query = target.partition("?")
    if "%" in path or not query.startswith(_API_VERSION) or "&" in query:
        return None
    found = route("POST", path)
    send = None if found is None else SENDS.get(found.operation)
    if found is None or send is None or query[len(_API_VERSION) :] not in SUPPORTED_VERSIONS:
        return _Send(target, path, None, Target.HUB, "")
    try:
        hub, name = send_target(found, send)
    except BadRequestError:
        return _Send(target, path, None, Target.HUB, "")
    return _Send(target, path, hub, send.target, name)


class _Sends(dict[bytes, _Send]):
    """The URLs of recent authenticated sends and what they say, so that a client sending to
    the same user or group again does not make the lane parse its URL again.

    Bounded in bytes: at most :data:`~hubbub.server.restrules.CACHED_URLS` URLs of up to
    :data:`~hubbub.server.restrules.CACHED_URL_BYTES` bytes (about 2 MiB with what they say), and
    only URLs whose request passed the token check.
    """

    __slots__ = ()

    def remember(self, url: bytes, send: _Send) -> None:
        if len(url) > CACHED_URL_BYTES:
            return
        if len(self) >= CACHED_URLS:
            del self[next(iter(self))]  # the oldest
        self[url] = send


class _Head:
    """httptools callbacks: the URL and the few headers the lane looks at."""

    __slots__ = ("complete", "forwarding", "headers", "metadata", "url")

    def __init__(self) -> None:
        self.url = b""
        self.headers: dict[bytes, bytes] = {}
        self.forwarding: list[tuple[bytes, bytes]] | None = None
        """Every ``Forwarded`` and ``X-Forwarded-For`` line, in order (None: none)."""
        self.complete = False
        self.metadata = False
        """The request gives message metadata (``X-WebPubSub-Metadata-*``): aiohttp reads it."""

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.lower()
        if key in _WANTED:
            self.headers[key] = value
        elif key in _FORWARDING:
            if self.forwarding is None:
                self.forwarding = []
            self.forwarding.append((key, value))
        elif key.startswith(_METADATA):
            self.metadata = True

    def on_headers_complete(self) -> None:
        self.complete = True


class Sniffer:
    """One connection's requests until the first one the lane does not take.

    The bytes of the request being read are kept in one buffer that only grows at its end
    (a request that arrives in one read is not copied at all); the head terminator is searched
    for in the new bytes only, and a head is parsed once, when it is complete.

    Args:
        lane: the node's fast lane.
        write: writes an answer to the connection.
        close: closes the connection (it was idle too long).
    """

    __slots__ = (
        "_admitted",
        "_body",
        "_buffer",
        "_lane",
        "_scanned",
        "_stop",
        "_write",
        "active",
        "close",
        "peer",
    )

    def __init__(
        self,
        lane: FastLane,
        write: Callable[[bytes], None],
        close: Callable[[], None],
        peer: str | None = None,
    ) -> None:
        self._lane = lane
        self.peer = peer
        """The connection's peer address (the network rules judge by it)."""
        self._write = write
        self.close = close
        self._buffer = bytearray()
        """The unanswered bytes, from the start of the request being read."""
        self._scanned = 0
        """How much of the buffer was searched for the end of the head, in vain."""
        self._admitted: Admitted | None = None
        """The request whose body is awaited (its head passed); None while reading a head."""
        self._body = 0
        """Where the admitted request's body starts, from the start of the request."""
        self._stop = 0
        """Where the admitted request ends, from the start of the request."""
        self.active = time.monotonic()
        """When the client last sent something."""

    @property
    def reading_head(self) -> bool:
        """Part of a request head has arrived, not all of it."""
        return self._admitted is None and len(self._buffer) > 0

    def feed(self, data: bytes) -> bytes | None:
        """Answer the plain sends in ``data``; return the bytes for aiohttp from the first other
        request on (None while every request so far was the lane's)."""
        self.active = time.monotonic()
        kept = self._buffer
        buffer: bytes | bytearray
        if kept:
            kept += data
            buffer = kept
        else:
            buffer = data  # the usual case: nothing waits, no copy
        start = 0  # where the request being read starts in ``buffer``
        try:
            while True:
                if self._admitted is None:
                    if not _may_be_post(buffer, start):
                        # Not a send (another method, or bytes a short Content-Length left
                        # behind): aiohttp answers it now (a 400 and a close for the bytes).
                        return self._hand_on(buffer, start)
                    end = buffer.find(
                        b"\r\n\r\n", start + max(self._scanned - 3, 0), start + MAX_HEAD_BYTES
                    )
                    if end < 0:
                        self._scanned = len(buffer) - start
                        if self._scanned >= MAX_HEAD_BYTES:
                            return self._hand_on(buffer, start)
                        break
                    self._scanned = 0
                    decided = self._admit(_slice(buffer, start, end + 4))
                    if decided is None:
                        return self._hand_on(buffer, start)
                    self._admitted, length = decided
                    self._body = end + 4 - start
                    self._stop = self._body + length
                stop = start + self._stop
                if len(buffer) < stop:
                    break  # the body is still on its way
                answer = self._lane.send(self._admitted, _slice(buffer, start + self._body, stop))
                if answer is None:
                    return self._hand_on(buffer, start)
                self._admitted = None  # published: never handed on again
                start = stop
                self._write(answer)
        except Exception:
            # ``start`` is where the request that failed begins: aiohttp answers it.
            log.error("the fast lane failed on a request; aiohttp answers it", exc_info=True)
            return self._hand_on(buffer, start)
        if buffer is kept:
            del kept[:start]  # bytearray: dropping the front does not move the rest
        elif start < len(buffer):
            kept += memoryview(buffer)[start:]
        return None

    def _hand_on(self, buffer: bytes | bytearray, start: int) -> bytes:
        """The bytes from ``start`` on, for aiohttp; the sniffer is done."""
        rest = _slice(buffer, start, len(buffer))
        self._buffer = bytearray()
        self._admitted = None
        self._scanned = 0
        return rest

    def _admit(self, head: bytes) -> tuple[Admitted, int] | None:
        """The admitted send and its body length, when the lane takes the request of ``head``."""
        fields = _Head()
        parser = httptools.HttpRequestParser(fields)
        try:
            parser.feed_data(head)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            return None
        headers = fields.headers
        connection = headers.get(b"connection")
        if (
            not fields.complete
            or fields.metadata
            or parser.get_method() != b"POST"
            or b"expect" in headers
            or b"transfer-encoding" in headers
            or not keeps_alive(
                parser.get_http_version(),
                None if connection is None else connection.decode("latin-1"),
            )
        ):
            return None
        length_text = headers.get(b"content-length", b"")
        if not length_text.isdigit() or not body_allowed(int(length_text)):
            return None
        admitted = self._lane.admit(fields.url, headers, self.peer, fields.forwarding)
        return None if admitted is None else (admitted, int(length_text))


_POST = b"POST "


def _may_be_post(buffer: bytes | bytearray, start: int) -> bool:
    """The bytes from ``start`` on begin a ``POST`` request, or may once more of it arrives."""
    if buffer.startswith(_POST, start):
        return True
    head = buffer[start : start + len(_POST)]
    return len(head) < len(_POST) and _POST.startswith(head)


def _slice(buffer: bytes | bytearray, start: int, stop: int) -> bytes:
    """``buffer[start:stop]`` as bytes, copied once (not at all for the whole of a bytes)."""
    if type(buffer) is bytes:
        return buffer if start == 0 and stop == len(buffer) else buffer[start:stop]
    with memoryview(buffer) as view:
        return bytes(view[start:stop])
