"""The pending invocations of one connection (``invoke`` / ``cancelInvocation``).

Invocations of a connection run side by side: a slow handler call never holds up the next
invocation. A ``cancelInvocation`` ends the pending call (the client has already given up): no
``invokeResponse`` is sent for it, and the handler's late answer is dropped. Pure bookkeeping;
the caller owns the tasks that call the handler.
"""

from __future__ import annotations

from hubbub.protocol.messages import InvokeResponseMessage

__all__ = ["MAX_CONCURRENT_INVOCATIONS", "InvocationBook"]

MAX_CONCURRENT_INVOCATIONS = 16


class InvocationBook:
    """Which invocations of a connection are pending."""

    __slots__ = ("_pending", "limit")

    def __init__(self, limit: int = MAX_CONCURRENT_INVOCATIONS) -> None:
        self.limit = limit
        self._pending: set[str] = set()

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, invocation_id: object) -> bool:
        return invocation_id in self._pending

    def start(self, invocation_id: str) -> InvokeResponseMessage | bool:
        """Register an invocation.

        Returns:
            True to call the handler; False for an id that is already pending (ignored: its
            first call answers it); or the refusal to send when too many are pending.
        """
        if invocation_id in self._pending:
            return False
        if len(self._pending) >= self.limit:
            return InvokeResponseMessage(
                invocation_id,
                False,
                None,
                "BadRequest",
                f"Too many concurrent invocations (at most {self.limit}).",
            )
        self._pending.add(invocation_id)
        return True

    def cancel(self, invocation_id: str) -> bool:
        """The client gave up: True when the invocation was pending (cancel its call)."""
        if invocation_id not in self._pending:
            return False
        self._pending.discard(invocation_id)
        return True

    def finish(self, invocation_id: str) -> bool:
        """The handler answered: True to send the response, False when it was cancelled."""
        if invocation_id not in self._pending:
            return False
        self._pending.discard(invocation_id)
        return True

    def clear(self) -> list[str]:
        """The connection ended: every pending invocation, to cancel."""
        pending = sorted(self._pending)
        self._pending.clear()
        return pending
