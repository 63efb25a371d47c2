"""What ``[network]``, ``[limits]`` and ``[auth.entra]`` decide, in one object for the adapters.

The WebSocket handshake, the REST rulebook and the frame pump each ask :class:`Policy` one
question and get ``None`` (go on) or a :class:`Refusal` (the status, message and headers to
answer with); the refusals are counted in the metrics here. :meth:`Policy.update` takes a
reloaded configuration without losing the connection counts or the Entra keys.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from hubbub import metrics
from hubbub.config import Config
from hubbub.core.acl import Address, TrafficKind, client_address
from hubbub.core.throttle import (
    BucketMap,
    ConnectionCounter,
    InboundGate,
    Limits,
    TrafficMeter,
    retry_after_headers,
)
from hubbub.entrakeys import EntraKeys
from hubbub.protocol.entra import (
    DATA_ACTIONS,
    EntraForbiddenError,
    EntraTokenError,
    EntraValidator,
    Identity,
)

__all__ = ["Policy", "Refusal"]

log = logging.getLogger("hubbub.policy")


@dataclass(frozen=True)
class Refusal:
    """An answer instead of going on: HTTP status, message for the error body, extra headers."""

    status: int
    message: str
    headers: Mapping[str, str] = field(default_factory=dict)


NETWORK_DENIED = "the network rules do not allow this address"


class Policy:
    """Network rules, throttles and Entra ID for one node, built from its configuration."""

    def __init__(self, config: Config, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._counter = ConnectionCounter(config.limits)
        self.entra: EntraKeys | None = None
        self._rest: BucketMap | None = None
        self._limits = Limits()
        self.update(config)

    def update(self, config: Config) -> None:
        """Take a reloaded configuration; open connections stay counted."""
        self._acl = config.network.acl
        self._proxies = config.network.trusted_proxies
        limits = config.limits
        self._counter.limits = limits
        if limits != self._limits:
            self._meter = TrafficMeter(limits)
            rate = limits.rest_requests_per_second
            burst = limits.rest_burst if limits.rest_burst is not None else rate
            self._rest = BucketMap(rate, max(1.0, burst or 1.0)) if rate else None
        self._limits = limits
        self.needs_address = not self._acl.allows_everything
        """Some network rule judges by address (else the address need not be read, nor
        :meth:`check_network` asked)."""
        self.rest_limited = self._rest is not None
        """A REST rate is set (else :meth:`check_rest_rate` need not be asked)."""
        self._update_entra(config)

    def _update_entra(self, config: Config) -> None:
        entra = config.entra
        if entra is None:
            self.entra = None
            return
        old = self.entra
        validator = EntraValidator(entra.settings)
        if (
            old is not None
            and (old.jwks_file, old.jwks_url) == (entra.jwks_file, entra.jwks_url)
            and old.validator.keys is not None
        ):
            validator.replace_keys(old.validator.keys)
        self.entra = EntraKeys(validator, jwks_file=entra.jwks_file, jwks_url=entra.jwks_url)
        if not entra.settings.verify_signatures:
            log.warning(
                "Entra ID tokens are accepted WITHOUT checking their signatures "
                "([auth.entra] verify_signatures = false): for local development only"
            )

    @property
    def limits(self) -> Limits:
        return self._limits

    # --- every request ------------------------------------------------------------------------

    def address(
        self, peer: str | None, forwarded: Sequence[str] = (), x_forwarded_for: Sequence[str] = ()
    ) -> Address | None:
        """The client's address: the peer, or what a trusted proxy says it forwarded."""
        return client_address(
            peer,
            forwarded=forwarded,
            x_forwarded_for=x_forwarded_for,
            trusted_proxies=self._proxies,
        )

    def check_network(
        self, kind: TrafficKind, address: Address | None, *, count: bool = True
    ) -> Refusal | None:
        """403 when the network rules do not allow ``kind`` from ``address`` (counted in the
        metrics unless ``count`` is false: a reader that hands the request on to another)."""
        if self._acl.allows_everything or self._acl.allows(kind, address):
            return None
        if count:
            metrics.NETWORK_DENIALS.inc()
        return Refusal(403, NETWORK_DENIED)

    # --- REST ---------------------------------------------------------------------------------

    def check_rest_rate(self, hub: str, *, count: bool = True) -> Refusal | None:
        """429 with Retry-After when the hub's REST calls are over ``rest_requests_per_second``
        (counted unless ``count`` is false, as :meth:`check_network`)."""
        if self._rest is None:
            return None
        wait = self._rest.take(hub.lower(), self._clock())
        if not wait:
            return None
        if count:
            metrics.REST_THROTTLED.inc()
        return Refusal(
            429, "too many requests: over the REST request rate", retry_after_headers(wait)
        )

    async def authorize_entra(self, token: str, hub: str, method: str, shape: str) -> Identity:
        """Authenticate an Entra bearer token and authorise the REST operation on ``hub``.

        Raises:
            EntraTokenError: 401 (also when Entra ID is not configured).
            EntraForbiddenError: 403.
        """
        if self.entra is None:
            raise EntraTokenError("invalid token: Microsoft Entra ID tokens are not accepted here")
        identity = await self.entra.authenticate(token)
        action = DATA_ACTIONS.get((method.upper(), shape))
        if action is None:
            raise EntraForbiddenError("*")
        self.entra.validator.authorize(identity, hub, action)
        return identity

    # --- client connections -------------------------------------------------------------------

    def admit_connection(self, hub: str, user: str | None, token: str | None) -> Refusal | None:
        """Reserve a connection place (429 over a limit); pair with :meth:`release_connection`."""
        refused = self._counter.admit(hub, user, token)
        if refused is None:
            return None
        metrics.LIMIT_REFUSALS.inc()
        return Refusal(429, refused)

    def release_connection(self, hub: str, user: str | None, token: str | None) -> None:
        self._counter.release(hub, user, token)

    def inbound_gate(self, hub: str, user: str | None, token: str | None) -> InboundGate | None:
        """The connection's inbound checks, or None when no inbound limit is set (the common
        case: the frame pump then does nothing per message)."""
        limits = self._limits
        if (
            limits.max_message_bytes is None
            and limits.messages_per_second is None
            and limits.user_inbound_bytes is None
            and limits.token_inbound_bytes is None
        ):
            return None
        return InboundGate(limits, self._meter, hub, user, token, self._clock())

    def throttled(self) -> None:
        """Count a connection closed by its :class:`InboundGate`."""
        metrics.THROTTLE_CLOSES.inc()
