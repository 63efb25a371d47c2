"""The service's text for an invalid OData filter (rest-api.md §6).

The first case is the service's own answer, recorded by ``@azure/web-pubsub``'s live tests; the
second is the example of the filter reference.
"""

from __future__ import annotations

import pytest

from hubbub.protocol.filters import FilterError, parse_filter, service_message


def test_the_recorded_answer() -> None:
    """Two words: the service reports OData's syntax error after the second, not the name."""
    assert service_message("invalid filter") == (
        "Invalid syntax for 'invalid filter': Syntax error at position 14 in 'invalid filter'."
        " (Parameter 'filter')"
    )


def test_the_documented_type_error_names_the_sub_expression() -> None:
    """A type error names the offending sub-expression, as the reference's example does."""
    text = service_message("not length(userId) gt 5")
    assert text is not None
    assert text.startswith("Invalid syntax for 'not length(userId)': Type '")
    assert text.endswith("', expect 'bool'. (Parameter 'filter')")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "NOT true",
            "Invalid syntax for 'NOT true': Syntax error at position 8 in 'NOT true'.",
        ),
        (
            "userId eq 'a' userId",
            "Invalid syntax for 'userId eq 'a' userId': "
            "Syntax error at position 20 in 'userId eq 'a' userId'.",
        ),
        (
            "userId eq",
            "Invalid syntax for 'userId eq': Expression expected at position 9 in 'userId eq'.",
        ),
        (
            "userId eq 'x",
            "Invalid syntax for 'userId eq 'x': "
            "There is an unterminated string literal at position 12 in 'userId eq 'x'.",
        ),
        (
            "userId == 'a'",
            "Invalid syntax for 'userId == 'a'': "
            "Syntax error: character '=' is not valid at position 7 in 'userId == 'a''.",
        ),
        (
            "userId in ('a' 'b')",
            "Invalid syntax for 'userId in ('a' 'b')': "
            "')' or ',' expected at position 15 in 'userId in ('a' 'b')'.",
        ),
        (
            "userId eq 1",
            "Invalid syntax for '1': Type 'int', expect 'string'.",
        ),
        (
            "user eq 'a'",
            "Invalid syntax for 'user': Could not find a property named 'user'.",
        ),
    ],
)
def test_the_format(text: str, expected: str) -> None:
    """``Invalid syntax for '<part>': <detail>. (Parameter 'filter')``, always."""
    assert service_message(text) == expected + " (Parameter 'filter')"


def test_a_valid_filter_has_no_message() -> None:
    """Valid filters, unknown-identifier-free or not, give None."""
    assert service_message("userId eq 'a' and 'g' in groups") is None


def test_filter_errors_carry_the_service_text() -> None:
    """Strict parsing keeps hubbub's own message; the service text is on the error too."""
    with pytest.raises(FilterError) as info:
        parse_filter("userId eq")
    assert str(info.value) == (
        "Invalid syntax at position 9: expected an operand but found end of filter."
    )
    assert info.value.service_message == (
        "Invalid syntax for 'userId eq': Expression expected at position 9 in 'userId eq'."
        " (Parameter 'filter')"
    )
