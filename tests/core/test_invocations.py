"""Pending invocations: side by side, cancellable, bounded."""

from __future__ import annotations

from hubbub.core.invocations import InvocationBook
from hubbub.protocol.messages import InvokeResponseMessage


def test_a_cancelled_invocation_answers_nothing() -> None:
    """After a cancel the handler's late answer is dropped; others are not affected."""
    book = InvocationBook()
    assert book.start("1") is True
    assert book.start("2") is True
    assert book.cancel("1") is True
    assert book.finish("2") is True
    assert book.finish("1") is False
    assert len(book) == 0


def test_unknown_and_repeated() -> None:
    """Cancelling an unknown id does nothing; a pending id started again is ignored."""
    book = InvocationBook()
    assert book.cancel("x") is False
    assert book.start("1") is True
    assert book.start("1") is False
    assert book.finish("1") is True
    assert book.start("1") is True


def test_at_most_limit_pending() -> None:
    """One invocation too many gets a BadRequest answer; finishing one makes room."""
    book = InvocationBook(limit=2)
    book.start("1")
    book.start("2")
    assert book.start("3") == InvokeResponseMessage(
        "3", False, None, "BadRequest", "Too many concurrent invocations (at most 2)."
    )
    assert "3" not in book
    book.finish("1")
    assert book.start("3") is True


def test_clear_when_the_connection_ends() -> None:
    """Every pending id is returned, to cancel its call."""
    book = InvocationBook()
    book.start("b")
    book.start("a")
    assert book.clear() == ["a", "b"]
    assert book.finish("a") is False
