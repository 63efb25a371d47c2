"""The stream state machine of a publishing connection (client-spec §3.6)."""

from __future__ import annotations

import pytest

from hubbub.core.streams import (
    DEFAULT_IDLE_TIMEOUT_MS,
    Ending,
    Fragment,
    StreamBook,
    StreamLimits,
    Terminal,
    forbidden,
)
from hubbub.protocol.messages import (
    DataType,
    Payload,
    StreamAckMessage,
    StreamClosedMessage,
    StreamDataMessage,
    StreamEndError,
    StreamEndMessage,
    StreamInfo,
    StreamNackMessage,
    StreamStartMessage,
)

HI = Payload(DataType.TEXT, b"hi")


def fragment(n: int, stream_id: str = "s") -> StreamDataMessage:
    return StreamDataMessage(stream_id, n, HI)


def opened(book: StreamBook, stream_id: str = "s", now: float = 0.0, **kwargs: object) -> None:
    message = StreamStartMessage("g", stream_id, **kwargs)  # type: ignore[arg-type]
    assert book.start(message, now) == StreamAckMessage(stream_id, 1)


def test_start_is_acknowledged_with_one() -> None:
    """An accepted start is ``streamAck{expectedSequenceId: 1}``; the stream is open."""
    book = StreamBook()
    opened(book)
    assert "s" in book and len(book) == 1


def test_fragments_in_order_are_published_and_acknowledged() -> None:
    """Each expected fragment is published with its position and acknowledged with the next."""
    book = StreamBook()
    opened(book, no_echo=True)
    for n in (1, 2, 3):
        out = book.data(fragment(n), now=1.0)
        assert out == Fragment("g", True, HI, StreamInfo("s", n), StreamAckMessage("s", n + 1))


def test_a_duplicate_is_acknowledged_not_published() -> None:
    """A lower sequence id gets the current expected id back; it is not published again."""
    book = StreamBook()
    opened(book)
    book.data(fragment(1), 0.0)
    book.data(fragment(2), 0.0)
    assert book.data(fragment(1), 0.0) == StreamAckMessage("s", 3)
    assert book.data(fragment(2), 0.0) == StreamAckMessage("s", 3)
    assert isinstance(book.data(fragment(3), 0.0), Fragment)


def test_a_gap_is_nacked_and_the_stream_stays_open() -> None:
    """A higher sequence id is nacked with the expected id; the right one is then accepted."""
    book = StreamBook()
    opened(book)
    assert book.data(fragment(3), 0.0) == StreamNackMessage(
        "s", 1, "InvalidSequenceId", "Expected streamSequenceId 1, received 3."
    )
    assert isinstance(book.data(fragment(1), 0.0), Fragment)


def test_acks_never_go_backwards() -> None:
    """Whatever arrives, every ack and nack reports a non-decreasing expected id."""
    book = StreamBook()
    opened(book)
    seen = [1]
    for n in (1, 1, 5, 2, 2, 4, 3, 1, 4, 9, 5):
        out = book.data(fragment(n), 0.0)
        expected = out.ack.expected_sequence_id if isinstance(out, Fragment) else None
        if isinstance(out, StreamAckMessage | StreamNackMessage):
            expected = out.expected_sequence_id
        assert expected is not None and expected >= seen[-1]
        seen.append(expected)
    assert seen[-1] == 6


def test_keepalive_answers_nothing_and_resets_the_idle_timer() -> None:
    """A keepalive is accepted silently; the idle deadline moves to keepalive + timeout."""
    book = StreamBook()
    opened(book, idle_timeout_ms=1000)
    assert book.next_deadline() == 1.0
    assert book.data(StreamDataMessage("s"), now=0.9) is None
    assert book.next_deadline() == pytest.approx(1.9)
    assert book.expire(1.5) == []
    assert len(book.expire(1.9)) == 1


def test_unknown_streams_are_not_found() -> None:
    """Data, keepalive and end of an unknown stream: ``streamClosed{StreamNotFound}``."""
    book = StreamBook()
    closed = StreamClosedMessage("x", "StreamNotFound", "Stream 'x' is not found.")
    assert book.data(fragment(1, "x"), 0.0) == Ending(closed, None)
    assert book.data(StreamDataMessage("x"), 0.0) == Ending(closed, None)
    assert book.end(StreamEndMessage("x")) == Ending(closed, None)


def test_end_sends_the_terminal_message_then_closes() -> None:
    """The terminal message carries the next expected id; the id may then be reused."""
    book = StreamBook()
    opened(book)
    book.data(fragment(1), 0.0)
    book.data(fragment(2), 0.0)
    assert book.end(StreamEndMessage("s")) == Ending(
        StreamClosedMessage("s"), Terminal("g", False, StreamInfo("s", 3, True))
    )
    assert "s" not in book
    opened(book)


def test_end_with_an_error_is_a_user_error_for_receivers() -> None:
    """The publisher's message and code reach receivers as ``UserError``; it closes cleanly."""
    book = StreamBook()
    opened(book)
    ending = book.end(StreamEndMessage("s", StreamEndError("gave up", "E42")))
    assert ending.closed == StreamClosedMessage("s")
    assert ending.terminal == Terminal(
        "g", False, StreamInfo("s", 1, True, "UserError", "gave up", "E42")
    )


def test_a_start_for_an_open_id_is_a_bad_request() -> None:
    """Ids are unique among a connection's open streams."""
    book = StreamBook()
    opened(book)
    again = book.start(StreamStartMessage("g", "s"), 0.0)
    assert again == Ending(
        StreamClosedMessage("s", "BadRequest", "Stream 's' already exists."), None
    )
    assert len(book) == 1


def test_at_most_max_active_streams() -> None:
    """One stream too many is refused; ending one makes room."""
    book = StreamBook(StreamLimits(max_active=2))
    opened(book, "a")
    opened(book, "b")
    refused = book.start(StreamStartMessage("g", "c"), 0.0)
    assert isinstance(refused, Ending) and refused.closed.error_name == "BadRequest"
    book.end(StreamEndMessage("a"))
    opened(book, "c")


def test_idle_timeout_default_and_cap() -> None:
    """No timeout means the service default; a longer one is cut to the limit."""
    book = StreamBook()
    opened(book, now=5.0)
    assert book.next_deadline() == 5.0 + DEFAULT_IDLE_TIMEOUT_MS / 1000 == 305.0
    capped = StreamBook(StreamLimits(max_idle_timeout_ms=60_000))
    opened(capped, "default", now=0.0)
    opened(capped, "long", now=0.0, idle_timeout_ms=10**9)
    assert capped.next_deadline() == 60.0
    assert len(capped.expire(59.9)) == 0 and len(capped.expire(60.0)) == 2


def test_idle_streams_end_with_idle_timeout_for_both_sides() -> None:
    """The publisher gets ``streamClosed{IdleTimeout}``, receivers a terminal IdleTimeout."""
    book = StreamBook()
    opened(book, idle_timeout_ms=500)
    book.data(fragment(1), 0.1)
    (ending,) = book.expire(0.6)
    text = "Stream 's' was idle for more than 500 ms."
    assert ending == Ending(
        StreamClosedMessage("s", "IdleTimeout", text),
        Terminal("g", False, StreamInfo("s", 2, True, "IdleTimeout", text)),
    )
    assert len(book) == 0 and book.next_deadline() is None


def test_only_fragments_of_a_stream_keep_it_alive() -> None:
    """Activity on one stream does not extend another."""
    book = StreamBook()
    opened(book, "a", idle_timeout_ms=1000)
    opened(book, "b", idle_timeout_ms=1000)
    book.data(StreamDataMessage("b"), 0.8)
    assert [e.closed.stream_id for e in book.expire(1.0)] == ["a"]
    assert "b" in book


def test_size_limit_ends_the_stream() -> None:
    """A fragment past ``max_bytes`` ends the stream: BadRequest and Cancelled."""
    book = StreamBook(StreamLimits(max_bytes=3))
    opened(book)
    assert isinstance(book.data(fragment(1), 0.0), Fragment)
    ending = book.data(fragment(2), 0.0)
    assert isinstance(ending, Ending)
    assert ending.closed == StreamClosedMessage("s", "BadRequest", "Stream 's' exceeds 3 bytes.")
    assert ending.terminal is not None
    assert ending.terminal.info == StreamInfo(
        "s", 2, True, "Cancelled", "Stream 's' exceeds 3 bytes."
    )
    assert "s" not in book


def test_an_invalid_fragment_ends_the_stream() -> None:
    """BadRequest for the publisher, Cancelled for the receivers; then the stream is gone."""
    book = StreamBook()
    opened(book)
    assert isinstance(book.data(fragment(1), 0.0), Fragment)
    ending = book.invalid("s", "bad")
    assert ending.closed == StreamClosedMessage("s", "BadRequest", "bad")
    assert ending.terminal is not None
    assert ending.terminal.info == StreamInfo("s", 2, True, "Cancelled", "bad")
    assert "s" not in book
    late = book.data(fragment(2), 0.0)
    assert isinstance(late, Ending)
    assert late.closed.error_name == "StreamNotFound"


def test_an_invalid_fragment_of_no_open_stream_tells_no_receiver() -> None:
    ending = StreamBook().invalid("nope", "bad")
    assert ending == Ending(StreamClosedMessage("nope", "BadRequest", "bad"), None)


def test_lifetime_limit_ends_the_stream() -> None:
    """With a lifetime limit, a busy stream still ends when it is reached."""
    book = StreamBook(StreamLimits(max_lifetime_ms=2000))
    opened(book, idle_timeout_ms=1000)
    book.data(StreamDataMessage("s"), 0.9)
    book.data(StreamDataMessage("s"), 1.8)
    assert book.next_deadline() == 2.0
    (ending,) = book.expire(2.0)
    assert ending.closed.error_name == "BadRequest"
    assert ending.terminal is not None and ending.terminal.info.error_name == "Cancelled"


def test_rewind_after_a_failed_publish_nacks_transient_error() -> None:
    """A fragment that could not be published is expected again."""
    book = StreamBook()
    opened(book)
    out = book.data(fragment(1), 0.0)
    assert isinstance(out, Fragment)
    assert book.rewind(out) == StreamNackMessage(
        "s", 1, "TransientError", "The fragment could not be published; send it again."
    )
    again = book.data(fragment(1), 0.0)
    assert isinstance(again, Fragment) and again.ack == StreamAckMessage("s", 2)


def test_cancel_all_when_the_publisher_is_gone() -> None:
    """Every open stream ends ``Cancelled`` for receivers; nothing is left open."""
    book = StreamBook()
    opened(book, "a", no_echo=True)
    opened(book, "b")
    book.data(fragment(1, "b"), 0.0)
    text = "The publisher of the stream disconnected."
    assert book.cancel_all() == [
        Terminal("g", True, StreamInfo("a", 1, True, "Cancelled", text)),
        Terminal("g", False, StreamInfo("b", 2, True, "Cancelled", text)),
    ]
    assert len(book) == 0


def test_forbidden_start() -> None:
    """The refusal text is the one of a forbidden sendToGroup."""
    assert forbidden("s", "room") == StreamClosedMessage(
        "s", "Forbidden", "The client has no permission to send message to group 'room'."
    )
