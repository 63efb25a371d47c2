"""Property tests of the OData filter parser: any text parses or is a FilterError, nothing else.

A filter comes straight from a REST caller (``filter=`` or an ``:addToGroups`` body), so every
exception other than FilterError would be a 500. Three kinds of input: any text; "token soup"
(the filter vocabulary in any order, which reaches deep into the parser); and well-typed filters
built from the grammar, which must parse, evaluate to a bool and obey ``not``/``and``/``or``.
"""

from __future__ import annotations

from collections.abc import Collection

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from hubbub.protocol.filters import MAX_CLAUSES, MAX_DEPTH, Filter, FilterError, parse_filter

pytestmark = pytest.mark.timeout(120)

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

CONNECTIONS: list[tuple[str, str | None, Collection[str]]] = [
    ("conn1", "user1", frozenset({"g1", "g2"})),
    ("conn2", None, frozenset()),
    ("", "", frozenset({""})),
    ("c'3", "Zoë Ü", frozenset({"room 1", "o'brien"})),
]

VOCABULARY = [
    *("userId", "connectionId", "groups", "USERID", "Groups"),
    *("'a'", "'user1'", "'g1'", "'o''brien'", "''", "'", "''''", "'unterminated"),
    *("0", "1", "-1", "+7", "2147483647", "-2147483648", "2147483648", "-2147483649"),
    *("1" * 5000, "0" * 5000 + "1", "-" + "9" * 4400, "1.5", "1e3", "5abc", "\u0661"),
    *("true", "false", "null", "True", "NULL"),
    *("(", ")", ",", "((", "))"),
    *("eq", "ne", "gt", "ge", "lt", "le", "and", "or", "not", "in", "EQ", "And"),
    *("tolower", "toupper", "trim", "substring", "concat", "endswith", "startswith"),
    *("contains", "indexof", "length", "Length", "foo"),
    *('"a"', "==", "&", "\x00", "\n", "é", "\ud800", " ", "\t"),
]
soup = st.lists(st.sampled_from(VOCABULARY), max_size=60)


def check(text: str) -> Filter | None:
    """Parse ``text``: a Filter that answers a bool for every connection, or a FilterError."""
    try:
        compiled = parse_filter(text)
    except FilterError as err:
        assert str(err) == err.message
        assert len(err.message) < 400, err.message[:100]
        assert err.position is None or 0 <= err.position <= len(text)
        return None
    for connection in CONNECTIONS:
        assert isinstance(compiled.matches(*connection), bool)
    return compiled


@FUZZ
@given(st.text())
def test_any_text(text: str) -> None:
    check(text)


@FUZZ
@given(soup.map(" ".join))
def test_token_soup(words: str) -> None:
    check(words)


@FUZZ
@given(soup.map("".join))
def test_token_soup_without_spaces(words: str) -> None:
    check(words)


@FUZZ
@given(st.integers(min_value=0, max_value=3 * MAX_DEPTH), st.sampled_from(["(", "not ", "not ("]))
def test_deep_nesting_is_refused_not_a_recursion_error(depth: int, opener: str) -> None:
    closer = ")" * (depth * opener.count("("))
    check(opener * depth + "true" + closer)


# -- well-typed filters from the grammar --------------------------------------------------------

quoted = st.text(max_size=8).map(lambda s: "'" + s.replace("'", "''") + "'")
names = st.sampled_from(["userId", "connectionId", "UserId", "CONNECTIONID"])
strings = st.recursive(
    st.one_of(quoted, names, st.just("null")),
    lambda inner: st.one_of(
        st.builds("tolower({})".format, inner),
        st.builds("toupper({})".format, inner),
        st.builds("trim({})".format, inner),
        st.builds("concat({}, {})".format, inner, inner),
        st.builds("substring({}, {})".format, inner, st.integers(-3, 12)),
        st.builds("substring({}, {}, {})".format, inner, st.integers(-3, 12), st.integers(-3, 12)),
        st.builds("({})".format, inner),
    ),
    max_leaves=4,
)
integers = st.one_of(
    st.integers(-(2**31), 2**31 - 1).map(str),
    st.builds("length({})".format, strings),
    st.just("length(groups)"),
    st.builds("indexof({}, {})".format, strings, strings),
)
comparisons = st.one_of(
    st.builds("{} {} {}".format, strings, st.sampled_from(["eq", "ne"]), strings),
    st.builds(
        "{} {} {}".format, integers, st.sampled_from(["eq", "ne", "gt", "ge", "lt", "le"]), integers
    ),
    st.builds("{} in groups".format, strings),
    st.builds(
        "{} in ({})".format, strings, st.lists(quoted, min_size=1, max_size=4).map(", ".join)
    ),
    st.builds(
        "{}({}, {})".format,
        st.sampled_from(["startswith", "endswith", "contains"]),
        strings,
        strings,
    ),
    st.sampled_from(["true", "false"]),
)
filters = st.recursive(
    comparisons,
    lambda inner: st.one_of(
        st.builds("not ({})".format, inner),
        st.builds("({}) and ({})".format, inner, inner),
        st.builds("({}) or ({})".format, inner, inner),
    ),
    max_leaves=12,
)


@FUZZ
@given(filters)
def test_well_typed_filters_parse_and_evaluate(text: str) -> None:
    compiled = check(text)
    assert compiled is not None, text  # within MAX_CLAUSES and MAX_DEPTH by construction


@FUZZ
@given(filters, filters)
def test_logic_agrees_with_python(a: str, b: str) -> None:
    for connection in CONNECTIONS:
        x, y = parse_filter(a).matches(*connection), parse_filter(b).matches(*connection)
        assert parse_filter(f"not ({a})").matches(*connection) is (not x)
        assert parse_filter(f"({a}) and ({b})").matches(*connection) is (x and y)
        assert parse_filter(f"({a}) or ({b})").matches(*connection) is (x or y)


@FUZZ
@given(st.integers(1, MAX_CLAUSES + 20), st.sampled_from([" and ", " or "]), comparisons)
def test_long_chains_are_bounded(count: int, joiner: str, clause: str) -> None:
    # Every comparison above is one clause.
    assert (check(joiner.join([f"({clause})"] * count)) is not None) is (count <= MAX_CLAUSES)
