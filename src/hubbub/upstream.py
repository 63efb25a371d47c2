"""Event handlers: the ``Upstream`` interface and its HTTP implementation (upstream.md).

``HttpUpstream`` posts CloudEvents to the hub's configured handlers over pooled keep-alive
connections. Before the first event to a handler it runs the abuse-protection probe and
remembers the outcome: success for good, failure for a back-off that doubles from 1 s to 60 s,
and no event goes to a handler that has not passed. Requests that fail with 408, a 5xx or a
network error are retried after 1, 3 and 5 s; other 4xx and timeouts are not, so a handler
never processes one event twice because of us.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

from hubbub.config import Config, EventHandlerConfig
from hubbub.errors import UpstreamError
from hubbub.handlerclient import HandlerAnswer, HandlerClient, HandlerClientError, header_lines
from hubbub.logs import ACTIVITY, redact_url
from hubbub.protocol.cloudevents import (
    EventContext,
    event_headers,
    event_time,
    expand_url,
    origin_allowed,
    user_event_matches,
    validation_headers,
)

__all__ = ["RETRY_DELAYS", "HttpUpstream", "Upstream", "UpstreamResponse"]

log = logging.getLogger("hubbub.upstream")

RETRY_DELAYS = (1.0, 3.0, 5.0)
"""Seconds to wait before the 2nd, 3rd and 4th attempt of a retryable failure."""
VALIDATION_BACKOFF = (1.0, 60.0)
"""First and largest wait before probing a handler that failed abuse protection again."""
_MATCHES_KEPT = 4096
"""At most this many (hub, event) handler choices are remembered."""
_HEADERS_KEPT = 8192
"""At most this many prebuilt header sets (about one per connection and event) are kept."""

_PER_EVENT = frozenset(("ce-id", "ce-time"))
"""The event headers that differ from one event of a connection to the next."""

_HeadersKey = tuple[str, str, str | None, str | None, str | None, str, bool, str | None, str]


@dataclass(frozen=True, slots=True)
class UpstreamResponse:
    """A handler's 2xx answer."""

    status: int
    body: bytes
    content_type: str | None
    connection_state: str | None
    """The ``ce-connectionState`` response header; None when absent (state unchanged)."""


class Upstream(Protocol):
    """Calls the application's event handlers."""

    def handler(self, hub: str, event: str, system: bool) -> EventHandlerConfig | None:
        """The first configured handler that takes ``event``, or None."""
        ...

    def presence_handler(self, hub: str, event: str, group: str) -> EventHandlerConfig | None:
        """The first handler that takes the group presence event ``event`` for ``group``."""
        ...

    async def invoke(
        self,
        handler: EventHandlerConfig,
        context: EventContext,
        event: str,
        system: bool,
        body: bytes,
        content_type: str,
        extra_headers: Sequence[tuple[str, str]] = (),
    ) -> UpstreamResponse:
        """Deliver one event and wait for the answer; ``extra_headers`` go with it (metadata).

        Raises:
            UpstreamError: the handler is unvalidated or unreachable, timed out or answered
                with a non-2xx status (``status`` is set for the latter).
        """
        ...

    def notify(
        self,
        handler: EventHandlerConfig,
        context: EventContext,
        event: str,
        body: bytes,
        prefix: str | None = None,
    ) -> None:
        """Deliver a system event without waiting (``connected``, ``disconnected``; with
        ``prefix`` the group presence events, see ``event_headers``)."""
        ...

    async def close(self) -> None: ...


def _text(exc: Exception, url: str) -> str:
    """A client error's text, without the query of the URL it may quote."""
    return str(exc).replace(url, redact_url(url))


@functools.lru_cache(maxsize=2)
def _event_time_at(second: int) -> str:
    return event_time(second)


def _now() -> str:
    """``event_time()``, formatted once a second."""
    return _event_time_at(int(time.time()))


class _Deadlines:
    """Time limits of requests under way, checked by one timer that ticks while any is pending.

    A timer per request (``asyncio.timeout``'s) costs a loop timer's insertion and
    cancellation on every event; here a request costs a dict entry, and a limit fires up to a
    tenth of it late (at most 1 s).
    """

    def __init__(self) -> None:
        self._due: dict[asyncio.Task[object], float] = {}
        self._expired: dict[asyncio.Task[object], int] = {}
        """Tasks cancelled for their limit, with their cancellation count before that."""
        self._handle: asyncio.TimerHandle | None = None
        self._tick = 1.0

    def add(self, task: asyncio.Task[object], seconds: float) -> None:
        loop = asyncio.get_running_loop()
        self._due[task] = loop.time() + seconds
        tick = min(1.0, max(0.01, seconds / 10))
        if self._handle is None or tick < self._tick:
            if self._handle is not None:
                self._handle.cancel()
            self._tick = tick
            self._handle = loop.call_later(tick, self._check)

    def remove(self, task: asyncio.Task[object]) -> None:
        """Forget ``task``'s limit."""
        self._due.pop(task, None)
        self._expired.pop(task, None)

    def timed_out(self, task: asyncio.Task[object]) -> bool:
        """Whether the CancelledError ``task`` got is its limit's alone (then it is taken back,
        as ``asyncio.timeout`` does); False for a cancellation from elsewhere."""
        before = self._expired.pop(task, None)
        return before is not None and task.uncancel() <= before

    def _check(self) -> None:
        self._handle = None
        if not self._due:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        for task, due in list(self._due.items()):
            if due <= now:
                del self._due[task]
                self._expired[task] = task.cancelling()
                task.cancel()
        if self._due:
            self._handle = loop.call_later(self._tick, self._check)


@dataclass
class _Validation:
    ok: bool = False
    retry_at: float = 0.0
    backoff: float = VALIDATION_BACKOFF[0]
    lock: asyncio.Lock | None = None


class HttpUpstream:
    """Webhook delivery over HTTP with validation, retries and a timeout per attempt."""

    def __init__(self, config: Config, timeout: float = 20.0) -> None:
        self._seconds = timeout
        self._deadlines = _Deadlines()
        self._session: HandlerClient | None = None
        self._validations: dict[str, _Validation] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._last: dict[str, asyncio.Task[None]] = {}
        """Per connection, its latest notification: the next one waits for it."""
        self._ca_file: str | None = None
        self._retired: set[HandlerClient] = set()
        self._closers: set[asyncio.Task[None]] = set()
        self._ssl: ssl.SSLContext = ssl.create_default_context()
        self.update(config)

    def update(self, config: Config) -> None:
        """Take a reloaded configuration: handlers, keys and the CA bundle, without a restart.

        Events already being delivered finish with the settings they started with; a changed
        CA bundle takes effect with the next connection to a handler.
        """
        self._hubs: Mapping[str, Sequence[EventHandlerConfig]] = {
            name: hub.event_handlers for name, hub in config.hubs.items()
        }
        self._matches: dict[tuple[str, str, bool], EventHandlerConfig | None] = {}
        """Which handler takes an event, by (hub, event, system): found once per name."""
        self._headers: dict[_HeadersKey, bytes] = {}
        """The headers of a connection's event but its ce-id and ce-time, built once."""
        self._keys = config.access_keys
        self._origin = urlsplit(config.endpoint).hostname or "localhost"
        if config.upstream_ca_file != self._ca_file:
            self._ca_file = config.upstream_ca_file
            # Certificates and host names are verified either way; a bundle replaces the
            # system's CAs (a private CA for internal handlers).
            self._ssl = ssl.create_default_context(cafile=self._ca_file)
            if self._session is not None:
                old, self._session = self._session, None
                self._retired.add(old)
                task = asyncio.get_running_loop().create_task(self._close_later(old))
                self._closers.add(task)
                task.add_done_callback(self._closers.discard)
            # A handler refused for its certificate is probed again at once under the new CAs.
            self._validations = {u: v for u, v in self._validations.items() if v.ok}

    def set_timeout(self, seconds: float) -> None:
        """How long one event handler request may take, from the next request on."""
        self._seconds = seconds

    async def _close_later(self, session: HandlerClient, grace: float = 30.0) -> None:
        """Close a replaced session once the requests it carries have had time to end."""
        await asyncio.sleep(grace)
        self._retired.discard(session)
        await session.close()

    def _client(self) -> HandlerClient:
        if self._session is None:
            # No global cap: one slow handler must not starve the sockets of another. No
            # cookies: events of different connections share the pooled sockets, and a cookie
            # one handler answer sets must not ride along on another connection's event.
            self._session = HandlerClient(self._ssl, per_origin=256, idle_seconds=30)
        return self._session

    def handler(self, hub: str, event: str, system: bool) -> EventHandlerConfig | None:
        key = (hub, event, system)
        try:
            return self._matches[key]
        except KeyError:
            pass
        found = self._find(hub, event, system)
        if len(self._matches) >= _MATCHES_KEPT:
            # Event names come from clients: keep the table bounded.
            self._matches.clear()
        self._matches[key] = found
        return found

    def _find(self, hub: str, event: str, system: bool) -> EventHandlerConfig | None:
        for handler in self._hubs.get(hub, ()):
            if system:
                if event in handler.system_events:
                    return handler
            elif handler.user_event_pattern and user_event_matches(
                handler.user_event_pattern, event
            ):
                return handler
        return None

    def presence_handler(self, hub: str, event: str, group: str) -> EventHandlerConfig | None:
        for handler in self._hubs.get(hub, ()):
            if handler.group_presence.wants(event, group):
                return handler
        return None

    async def _validated(self, handler: EventHandlerConfig, hub: str) -> bool:
        url = expand_url(handler.url_template, hub, "validate")
        state = self._validations.get(url)
        if state is None:
            state = self._validations[url] = _Validation()
        elif state.ok:
            return True
        if state.lock is None:
            state.lock = asyncio.Lock()
        async with state.lock:
            if state.ok or time.monotonic() < state.retry_at:
                return state.ok
            state.ok = await self._probe(url)
            if not state.ok:
                state.retry_at = time.monotonic() + state.backoff
                state.backoff = min(state.backoff * 2, VALIDATION_BACKOFF[1])
        return state.ok

    async def _probe(self, url: str) -> bool:
        headers = header_lines(validation_headers(self._origin).items())
        try:
            r = await self._attempt("OPTIONS", url, headers, b"")
            allowed = ",".join(r.header_values("webhook-allowed-origin"))
            if 200 <= r.status < 300 and origin_allowed(allowed, self._origin):
                log.info("event handler %s passed abuse protection", redact_url(url))
                return True
            log.warning(
                "abuse protection for '%s' failed: %s, allowed origin %r",
                redact_url(url),
                r.status,
                allowed,
            )
        except (HandlerClientError, TimeoutError) as exc:
            log.warning("abuse protection for '%s' failed: %s", redact_url(url), _text(exc, url))
        return False

    async def invoke(
        self,
        handler: EventHandlerConfig,
        context: EventContext,
        event: str,
        system: bool,
        body: bytes,
        content_type: str,
        extra_headers: Sequence[tuple[str, str]] = (),
        prefix: str | None = None,
    ) -> UpstreamResponse:
        try:
            response = await self._invoke(
                handler, context, event, system, body, content_type, extra_headers, prefix
            )
        except UpstreamError as exc:
            reason = str(exc).removeprefix("event handler ")
            where = redact_url(handler.url_template)
            ACTIVITY.event_failures.add(f"{event if system else 'user event'} to {where} {reason}")
            raise
        ACTIVITY.events_delivered += 1
        return response

    async def _invoke(
        self,
        handler: EventHandlerConfig,
        context: EventContext,
        event: str,
        system: bool,
        body: bytes,
        content_type: str,
        extra_headers: Sequence[tuple[str, str]],
        prefix: str | None,
    ) -> UpstreamResponse:
        if not await self._validated(handler, context.hub):
            raise UpstreamError("event handler failed abuse protection", None)
        url = expand_url(handler.url_template, context.hub, event)
        try:
            headers = self._event_headers(context, event, system, content_type, prefix)
            if extra_headers:
                headers += header_lines(extra_headers)
        except ValueError as exc:
            # A user id, event name or metadata value that would break the request's head.
            raise UpstreamError(f"event headers not sendable: {exc}", None) from exc
        for attempt, delay in enumerate((0.0, *RETRY_DELAYS)):
            if delay:
                await asyncio.sleep(delay)
            last = attempt == len(RETRY_DELAYS)
            try:
                response = await self._post(url, headers, body)
            except TimeoutError as exc:
                # No URL: the message reaches the client, and the URL may carry a key.
                raise UpstreamError("event handler timed out", None) from exc
            except HandlerClientError as exc:
                if last:
                    raise UpstreamError(f"event handler unreachable: {_text(exc, url)}") from exc
                log.debug(
                    "event handler %s unreachable (%s), retrying", redact_url(url), _text(exc, url)
                )
                continue
            if 200 <= response.status < 300:
                return response
            if 300 <= response.status < 400:
                raise UpstreamError(
                    f"event handler answered {response.status} (redirects are not followed: "
                    "configure the URL it points to)",
                    response.status,
                )
            if (response.status != 408 and response.status < 500) or last:
                raise UpstreamError(f"event handler answered {response.status}", response.status)
            log.debug("event handler %s answered %s, retrying", redact_url(url), response.status)
        raise AssertionError("unreachable")

    def _event_headers(
        self,
        context: EventContext,
        event: str,
        system: bool,
        content_type: str,
        prefix: str | None,
    ) -> bytes:
        """``event_headers`` on the wire: the fields built for this connection's earlier events
        of the kind, then this event's ce-id and ce-time.

        Raises:
            ValueError: a value holds a line break (see ``header_lines``).
        """
        key: _HeadersKey = (
            context.hub,
            context.connection_id,
            context.user_id,
            context.subprotocol,
            context.state,
            event,
            system,
            prefix,
            content_type,
        )
        base = self._headers.get(key)
        if base is None:
            if len(self._headers) >= _HEADERS_KEPT:
                self._headers.clear()
            fields = event_headers(
                context, event, system, self._origin, self._keys, content_type, prefix=prefix
            )
            base = self._headers[key] = header_lines(
                (name, value) for name, value in fields.items() if name not in _PER_EVENT
            )
        return b"%sce-id: %d\r\nce-time: %s\r\n" % (
            base,
            context.event_id,
            _now().encode("ascii"),
        )

    async def _post(self, url: str, headers: bytes, body: bytes) -> UpstreamResponse:
        answer = await self._attempt("POST", url, headers, body)
        return UpstreamResponse(
            answer.status,
            answer.body,
            answer.header("content-type"),
            answer.header("ce-connectionstate"),
        )

    async def _attempt(self, method: str, url: str, headers: bytes, body: bytes) -> HandlerAnswer:
        """One request, from its connection to the answer's end, under one limit kept by
        ``_Deadlines`` (see there).

        Raises:
            TimeoutError: the limit passed.
            HandlerClientError: no answer.
        """
        task = asyncio.current_task()
        assert task is not None
        self._deadlines.add(task, self._seconds)
        try:
            return await self._client().request(method, url, headers, body)
        except asyncio.CancelledError:
            if self._deadlines.timed_out(task):
                raise TimeoutError from None
            raise
        finally:
            self._deadlines.remove(task)

    def notify(
        self,
        handler: EventHandlerConfig,
        context: EventContext,
        event: str,
        body: bytes,
        prefix: str | None = None,
    ) -> None:
        # A connection's notifications go out one after another, in the order they happened
        # (joined before left before disconnected), as their ce-ids say; other connections'
        # notifications do not wait for them.
        key = context.connection_id
        previous = self._last.get(key)
        task = asyncio.get_running_loop().create_task(
            self._notify(handler, context, event, body, prefix, previous)
        )
        self._last[key] = task
        self._tasks.add(task)
        task.add_done_callback(lambda done: self._finished(key, done))

    def _finished(self, key: str, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if self._last.get(key) is task:
            del self._last[key]

    async def _notify(
        self,
        handler: EventHandlerConfig,
        context: EventContext,
        event: str,
        body: bytes,
        prefix: str | None,
        previous: asyncio.Task[None] | None = None,
    ) -> None:
        if previous is not None and not previous.done():
            await asyncio.wait((previous,))
        try:
            await self.invoke(
                handler,
                context,
                event,
                True,
                body,
                "application/json; charset=utf-8",
                prefix=prefix,
            )
        except UpstreamError as exc:
            # Counted for the log's summary (one line per interval, not one per event).
            log.debug("%s event of %s not delivered: %s", event, context.connection_id, exc)

    async def close(self) -> None:
        """Give pending notifications a moment, then close the pooled connections."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=2)
        for task in (*self._tasks, *self._closers):
            task.cancel()
        for session in (*self._retired, *([self._session] if self._session else [])):
            await session.close()
        self._retired.clear()
