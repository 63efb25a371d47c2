"""Exceptions raised by hubbub.

The tree::

    HubbubError
    ├── ConfigError          a configuration file, flag or variable is invalid
    ├── ProtocolError        a client sent a frame that breaks its subprotocol (closes it)
    ├── HandshakeError       a WebSocket upgrade is refused; carries the HTTP status
    ├── OperationError       a client or REST operation failed; carries the ack error name
    │   │                    and the REST status
    │   ├── BadRequestError      400 / ``BadRequest``
    │   │   └── InvalidFilterError   an OData ``filter`` that does not parse (the service's
    │   │                            own answer, ``restanswers.invalid_filter_answer``)
    │   ├── ForbiddenError       403 / ``Forbidden``
    │   └── NotFoundError        404 / ``NotFound``
    ├── UpstreamError        an event handler failed
    └── BrokerError          the engine could not deliver or apply a command
        └── ClusterUnavailableError  the cluster engine (Redis) cannot be reached: also an
                                     OperationError, 503 / ``InternalServerError``

Adapters map these to HTTP statuses, ack error names and close codes, each in one function.
"""

from __future__ import annotations

__all__ = [
    "BadRequestError",
    "BrokerError",
    "ClusterUnavailableError",
    "ConfigError",
    "ForbiddenError",
    "HandshakeError",
    "HubbubError",
    "InvalidFilterError",
    "InvalidFragmentError",
    "NotFoundError",
    "OperationError",
    "ProtocolError",
    "UpstreamError",
]


class HubbubError(Exception):
    """Root of every error hubbub raises on purpose."""


class ConfigError(HubbubError):
    """Invalid configuration: the message names the source, the key and the problem."""


class ProtocolError(HubbubError):
    """A client frame that breaks its subprotocol.

    Attributes:
        close_code: the WebSocket close code to answer with (1003, 1007, ...).
    """

    def __init__(self, message: str, close_code: int) -> None:
        super().__init__(message)
        self.close_code = close_code


class HandshakeError(HubbubError):
    """A refused WebSocket upgrade.

    Attributes:
        status: the HTTP status to answer with.
    """

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class OperationError(HubbubError):
    """A failed operation.

    Attributes:
        name: the ack error name sent to subprotocol clients.
        status: the HTTP status sent to REST callers.
    """

    name = "InternalServerError"
    status = 500
    ack_id: int | None = None
    """The ``ackId`` of the client message that failed, when there is one."""
    stream_id: str | None = None
    """The stream a failed stream message addressed; answered with ``streamClosed``."""


class BadRequestError(OperationError):
    """The request itself is invalid."""

    name = "BadRequest"
    status = 400


class InvalidFilterError(BadRequestError):
    """An OData ``filter`` that does not parse; ``str(e)`` is the service's text for it
    (``Invalid syntax for '<part>': <detail>. (Parameter 'filter')``)."""


class InvalidFragmentError(BadRequestError):
    """An invalid ``streamData`` (incomplete, or data that does not decode): it ends the
    stream ``stream_id`` addresses."""

    stream_id: str

    def __init__(self, message: str, stream_id: str) -> None:
        super().__init__(message)
        self.stream_id = stream_id


class ForbiddenError(OperationError):
    """The caller lacks a permission."""

    name = "Forbidden"
    status = 403


class NotFoundError(OperationError):
    """The target does not exist."""

    name = "NotFound"
    status = 404


class UpstreamError(HubbubError):
    """An event handler could not be reached or answered with a failure.

    Attributes:
        status: the handler's HTTP status, or None when there was no answer.
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class BrokerError(HubbubError):
    """The engine failed to deliver a publication or to apply a command."""


class ClusterUnavailableError(BrokerError, OperationError):
    """An operation needs the cluster (a registry read, a command, a cross-node publish) while
    the engine has no working connection to Redis: REST answers 503, clients get an
    ``InternalServerError`` ack. Retrying later is safe."""

    name = "InternalServerError"
    status = 503
