"""Unit tests for the OData filter subset (rest-api.md §6)."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection

import pytest

from hubbub.protocol.filters import MAX_CLAUSES, MAX_DEPTH, Filter, FilterError, parse_filter


def run(
    text: str, user: str | None = "user1", conn: str = "conn1", groups: Collection[str] = ()
) -> bool:
    """Parse ``text`` and evaluate it against one connection."""
    return parse_filter(text).matches(conn, user, frozenset(groups))


def error(text: str) -> FilterError:
    """Parse ``text``, expecting a FilterError, and return it."""
    with pytest.raises(FilterError) as info:
        parse_filter(text)
    return info.value


# -- examples from the docs (§6 "Examples" and the operations table) -------------------------------


@pytest.mark.parametrize(
    ("text", "user", "conn", "groups", "expected"),
    [
        (
            "'group1' in groups or 'group2' in groups or 'group3' in groups",
            "u",
            "c",
            ["group2"],
            True,
        ),
        ("'group1' in groups or 'group2' in groups or 'group3' in groups", "u", "c", ["g4"], False),
        ("'group1' in groups or 'group2' in groups or 'group3' in groups", "u", "c", [], False),
        (
            "userId in ('user1', 'user2', 'user3') and 'group1' in groups",
            "user2",
            "c",
            ["group1"],
            True,
        ),
        (
            "userId in ('user1', 'user2', 'user3') and 'group1' in groups",
            "user4",
            "c",
            ["group1"],
            False,
        ),
        ("userId in ('user1', 'user2', 'user3') and 'group1' in groups", "user1", "c", [], False),
        (
            "userId in ('user1', 'user2', 'user3') and 'group1' in groups",
            None,
            "c",
            ["group1"],
            False,
        ),
        ("userId in ('user1','user2') and 'group1' in groups", "user1", "c", ["group1", "x"], True),
        ("userId eq 'user1' and connectionId ne '123'", "user1", "abc", [], True),
        ("userId eq 'user1' and connectionId ne '123'", "user1", "123", [], False),
        ("userId eq 'user1' and connectionId ne '123'", "user2", "abc", [], False),
        ("userId eq 'user1' and (not ('group1' in groups))", "user1", "c", [], True),
        ("userId eq 'user1' and (not ('group1' in groups))", "user1", "c", ["group1"], False),
        ("userId eq 'user''1'", "user'1", "c", [], True),
        ("userId eq 'user''1'", "user1", "c", [], False),
        ("length(userId) le 10 and length(userId) gt 3", "user1", "c", [], True),
        ("length(userId) le 10 and length(userId) gt 3", "abc", "c", [], False),
        ("length(userId) le 10 and length(userId) gt 3", "a" * 11, "c", [], False),
        ("length(userId) gt 10 or length(userId) le 3", "abc", "c", [], True),
        ("length(userId) gt 10 or length(userId) le 3", "user1", "c", [], False),
        ("not endswith(userId, 'milk')", "somemilk", "c", [], False),
        ("not endswith(userId, 'milk')", "bob", "c", [], True),
        ("userId eq null", None, "c", [], True),
        ("userId eq null", "user1", "c", [], False),
        ("userId ne null", "user1", "c", [], True),
        ("userId ne 'user1'", "user2", "c", [], True),
        ("length(userId) gt 10", "a" * 11, "c", [], True),
        ("length(userId) ge 10", "a" * 10, "c", [], True),
        ("length(userId) lt 3", "ab", "c", [], True),
        ("tolower(userId) eq 'user1'", "USER1", "c", [], True),
        ("toupper(userId) eq 'USER1'", "user1", "c", [], True),
        ("trim(userId) eq 'user1'", " user1 ", "c", [], True),
        ("substring(userId,5,2) eq 'ab'", "user-ab-de", "c", [], True),
        ("endswith(userId,'de')", "user-ab-de", "c", [], True),
        ("startswith(userId,'user')", "user-ab-de", "c", [], True),
        ("indexof(userId,'-ab-') ge 0", "user-ab-de", "c", [], True),
        ("length(userId) gt 1", "user-ab-de", "c", [], True),
        ("length(groups) gt 1", "u", "c", ["a", "b"], True),
        ("length(groups) gt 1", "u", "c", ["a"], False),
        ("userId eq 'user1' or (not (startswith(userId,'user2')))", "user3", "c", [], True),
        ("userId eq 'user1' or (not (startswith(userId,'user2')))", "user2x", "c", [], False),
    ],
)
def test_documented_examples(
    text: str, user: str | None, conn: str, groups: list[str], expected: bool
) -> None:
    """Every filter shown in the docs evaluates as documented."""
    assert run(text, user, conn, groups) is expected


def test_documented_grouping_example_is_unbalanced() -> None:
    """The docs' grouping example lacks a ')' as printed, so it is rejected with a position."""
    err = error("userId eq 'user1' or (not (startswith(userId,'user2'))")
    assert "expected ')'" in str(err) and err.position == 54


@pytest.mark.parametrize("length", range(12))
def test_documented_precedence_equivalence(length: int) -> None:
    """`and` binds tighter than `or`, as in the docs' equivalent pair of filters."""
    bare = (
        "length(userId) gt 0 and length(userId) lt 3"
        " or length(userId) gt 7 and length(userId) lt 10"
    )
    full = (
        "((length(userId) gt 0) and (length(userId) lt 3))"
        " or ((length(userId) gt 7) and (length(userId) lt 10))"
    )
    user = "x" * length
    assert run(bare, user) == run(full, user) == (0 < length < 3 or 7 < length < 10)


def test_documented_not_type_error() -> None:
    """`not` binds tighter than comparisons, so the docs' example is a type error."""
    err = error("not length(userId) gt 5")
    assert (
        str(err)
        == "Invalid syntax for 'not length(userId)' at position 0: Type 'int', expect 'bool'."
    )
    assert err.position == 0
    assert run("not (length(userId) gt 5)", "abc")


# -- operators, precedence, literals ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("true or true and false", True),
        ("false and true or true", True),
        ("(true or true) and false", False),
        ("not false and false", False),
        ("not true or true", True),
        ("not not true", True),
        ("not (true and false)", True),
        ("true and true and true and false", False),
        ("false or false or false or true", True),
        ("1 lt 2", True),
        ("2 le 2", True),
        ("3 gt 2", True),
        ("2 ge 3", False),
        ("1 eq 1", True),
        ("1 ne 1", False),
        ("+5 eq 5", True),
        ("-1 lt 0", True),
        ("2147483647 gt -2147483648", True),
        ("true eq true", True),
        ("true ne false", True),
        ("'a' eq 'a'", True),
        ("'a' eq 'A'", False),
        ("'' eq ''", True),
        ("'it''s' eq concat('it', '''s')", True),
        ("'''' eq concat('''', '')", True),
        ("'héllo wörld ✓' eq 'héllo wörld ✓'", True),
        ("startswith(userId, 'u') eq true", True),
        ("contains(userId, 'x') ne true", True),
        ("(((userId))) eq 'user1'", True),
        ("(length(userId)) eq 5", True),
        ("userId  eq\t'user1'\n", True),
        ("(userId eq'user1')and('g' in groups)", False),
    ],
)
def test_operators_and_precedence(text: str, expected: bool) -> None:
    """Logical and comparison operators follow not > comparison > and > or."""
    assert run(text) is expected


@pytest.mark.parametrize(
    ("text", "user", "expected"),
    [
        ("userId eq ''''", "'", True),
        ("userId eq 'it''s'", "it's", True),
        ("userId eq ''", "", True),
        ("userId eq ''", None, False),
        ("userId in ('a''b', 'c')", "a'b", True),
        ("userId eq 'a''''b'", "a''b", True),
        ("userId eq 'a'''", "a'", True),
        ("userId eq '''a'", "'a", True),
        ("userId eq 'a b'", "a b", True),
        ("userId eq 'a,b)'", "a,b)", True),
    ],
)
def test_quote_escaping(text: str, user: str | None, expected: bool) -> None:
    """`''` inside a string literal stands for one `'`."""
    assert run(text, user) is expected


@pytest.mark.parametrize(
    "text",
    [
        "USERID eq 'user1'",
        "UserId eq 'user1'",
        "userid eq 'user1'",
        "CONNECTIONID eq 'conn1'",
        "connectionID eq 'conn1'",
        "'g' in GROUPS",
        "'g' in Groups",
        "length(GROUPS) eq 1",
    ],
)
def test_identifiers_are_case_insensitive(text: str) -> None:
    """Identifier names match case-insensitively (§6 "Identifiers")."""
    assert run(text, groups=["g"])


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("userId EQ 'user1'", "operators are lowercase"),
        ("userId eq 'a' AND true", "operators are lowercase"),
        ("userId eq 'a' Or true", "operators are lowercase"),
        ("NOT true", "unknown identifier 'NOT'"),
        ("TRUE", "keywords and literals are lowercase"),
        ("userId eq NULL", "keywords and literals are lowercase"),
        ("'a' IN groups", "operators are lowercase"),
        ("ToLower(userId) eq 'a'", "function names are lowercase"),
        ("startsWith(userId, 'a')", "function names are lowercase"),
    ],
)
def test_keywords_and_functions_are_case_sensitive(text: str, fragment: str) -> None:
    """Operators, literals and function names are lowercase only, as in OData."""
    assert fragment in str(error(text))


def test_string_values_are_case_sensitive() -> None:
    """String equality is exact; tolower() is the way to fold case."""
    assert not run("userId eq 'USER1'")
    assert run("tolower(userId) eq tolower('USER1')")


# -- functions -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "tolower('AbC') eq 'abc'",
        "toupper('AbC') eq 'ABC'",
        "trim('  a b  ') eq 'a b'",
        "trim('\t x \n') eq 'x'",
        "substring('hello', 1) eq 'ello'",
        "substring('hello', 0) eq 'hello'",
        "substring('hello', 5) eq ''",
        "substring('hello', 1, 3) eq 'ell'",
        "substring('hello', 0, 5) eq 'hello'",
        "substring('hello', 2, 0) eq ''",
        "substring('hello', 6) eq null",
        "substring('hello', -1) eq null",
        "substring('hello', 2, 4) eq null",
        "substring('hello', 1, -1) eq null",
        "substring('hello', length('ab')) eq 'llo'",
        "substring(userId, 0, length(userId)) eq userId",
        "concat('a', 'b') eq 'ab'",
        "concat(userId, '-x') eq 'user1-x'",
        "concat(concat(userId, ':'), connectionId) eq 'user1:conn1'",
        "endswith('hello', 'llo')",
        "endswith('hello', '')",
        "not endswith('hello', 'he')",
        "startswith('hello', 'he')",
        "not startswith('hello', 'lo')",
        "contains('hello', 'ell')",
        "not contains('hello', 'xyz')",
        "indexof('hello', 'l') eq 2",
        "indexof('hello', 'he') eq 0",
        "indexof('hello', 'z') eq -1",
        "length('') eq 0",
        "length('héllo') eq 5",
        "length(groups) eq 2",
        "length((groups)) eq 2",
        "length(concat(tolower(userId), trim('  x  '))) eq 6",
        "indexof(toupper(userId), 'SER') eq 1",
    ],
)
def test_functions(text: str) -> None:
    """Every §6 function computes the documented result."""
    assert run(text, groups=["a", "b"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("userId eq null", True),
        ("userId ne null", False),
        ("userId eq 'a'", False),
        ("userId ne 'a'", True),
        ("null eq null", True),
        ("null ne null", False),
        ("length(userId) eq null", True),
        ("length(userId) gt 0", False),
        ("length(userId) lt 100", False),
        ("length(userId) le 0", False),
        ("length(userId) ge 0", False),
        ("not (length(userId) gt 5)", True),
        ("null lt 1", False),
        ("1 ge null", False),
        ("tolower(userId) eq null", True),
        ("toupper(userId) eq null", True),
        ("trim(userId) eq null", True),
        ("substring(userId, 0) eq null", True),
        ("substring(userId, 0, 1) eq null", True),
        ("substring('abc', 0, length(userId)) eq null", True),
        ("substring('abc', length(userId)) eq null", True),
        ("startswith(userId, '')", False),
        ("endswith(userId, '')", False),
        ("contains(userId, '')", False),
        ("contains('abc', null)", False),
        ("not startswith(userId, 'a')", True),
        ("indexof(userId, 'a') eq -1", True),
        ("indexof('abc', null) eq -1", True),
        ("concat(userId, 'x') eq 'x'", True),
        ("concat('x', userId) eq 'x'", True),
        ("concat(userId, null) eq null", True),
        ("length(null) eq null", True),
        ("userId in ('a', null)", True),
        ("userId in ('a', 'b')", False),
        ("null in ('a', null)", True),
        ("userId in groups", False),
        ("null in groups", False),
        ("userId eq connectionId", False),
    ],
)
def test_null_semantics(text: str, expected: bool) -> None:
    """A null userId propagates through functions; ordering with null is false (§6)."""
    assert run(text, user=None, groups=["a"]) is expected


# -- in --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("'g1' in groups", True),
        ("'g3' in groups", False),
        ("'G1' in groups", False),
        ("'g1' in (groups)", True),
        ("'g1' in ((groups))", True),
        ("userId in groups", True),
        ("concat('g', '2') in groups", True),
        ("userId in ('user1')", True),
        ("userId in ('x', 'y', 'user1')", True),
        ("userId in ('x', 'y')", False),
        ("'user1' in (userId, connectionId)", True),
        ("'conn1' in (userId, connectionId)", True),
        ("'x' in (userId, connectionId)", False),
        ("connectionId in (userId, 'conn1')", True),
        ("length(userId) in (1, 2, 5)", True),
        ("length(userId) in (1, 2)", False),
        ("startswith(userId, 'u') in (true)", True),
        ("not (userId in ('user1'))", False),
    ],
)
def test_in(text: str, expected: bool) -> None:
    """`in` tests a value against a literal list or the connection's groups."""
    assert run(text, groups=["g1", "g2", "user1"]) is expected


def test_in_large_list_is_one_clause() -> None:
    """A long `in` list counts as one clause and is a set lookup."""
    names = ", ".join(f"'user{i}'" for i in range(5000))
    flt = parse_filter(f"userId in ({names})")
    assert flt.matches("c", "user4999", ()) and not flt.matches("c", "user5000", ())


@pytest.mark.parametrize("groups", [["g"], {"g"}, frozenset({"g"}), ("g",), {"g": 1}.keys()])
def test_groups_accepts_any_collection(groups: Collection[str]) -> None:
    """`groups` may be any collection; sets make membership O(1)."""
    flt = parse_filter("'g' in groups and length(groups) eq 1")
    assert flt.matches("c", None, groups)


# -- errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fragment", "position"),
    [
        ("", "the filter is empty", 0),
        ("   ", "the filter is empty", 0),
        ("(userId eq 'a'", "expected ')' but found end of filter", 14),
        ("((true)", "expected ')' but found end of filter", 7),
        ("userId eq 'a')", "unexpected ')'", 13),
        ("true)", "unexpected ')'", 4),
        ("userId eq 'a", "unterminated string literal", 10),
        ("userId eq 'a''", "unterminated string literal", 10),
        ("foo(userId)", "unknown function 'foo'", 0),
        ("tolower(userId, 'a') eq 'b'", "takes 1 argument(s), got 2", 0),
        ("substring(userId) eq 'a'", "takes 2 or 3 argument(s), got 1", 0),
        ("substring(userId, 1, 2, 3) eq 'a'", "takes 2 or 3 argument(s), got 4", 0),
        ("startswith(userId)", "takes 2 argument(s), got 1", 0),
        ("length(userId, groups) eq 1", "takes 1 argument(s), got 2", 0),
        ("tolower() eq 'a'", "expected an operand but found ')'", 8),
        ("userId eq 'a' 'b'", "unexpected \"'b'\", expected 'and' or 'or'", 14),
        ("userId eq 'a' userId", "unexpected 'userId'", 14),
        ("userId eq", "expected an operand but found end of filter", 9),
        ("eq 'a'", "expected an operand but found 'eq'", 0),
        ("true and", "expected an operand but found end of filter", 8),
        ("true and or false", "expected an operand but found 'or'", 9),
        ("not", "expected an operand but found end of filter", 3),
        ("userId eq 1.5", "unexpected character '.'", 11),
        ("userId eq 5abc", "invalid literal '5abc'", 10),
        ("userId eq -x", "unexpected character '-'", 10),
        ('userId eq "a"', "string literals use single quotes", 10),
        ("userId eq 'a' & true", "unexpected character '&'", 14),
        ("userId == 'a'", "unexpected character '='", 7),
        ("userId eq 2147483648", "out of range", 10),
        ("userId eq -2147483649", "out of range", 10),
        ("userId eq 'a' eq 'b'", "comparisons do not chain", 14),
        ("'a' in groups in groups", "comparisons do not chain", 14),
        ("protocol eq 'json.webpubsub.azure.v1'", "unknown identifier 'protocol'", 0),
        ("user eq 'a'", "unknown identifier 'user', expected userId, connectionId or groups", 0),
        ("('a', 'b') eq userId", "a list is only allowed after 'in'", 0),
        ("userId in ()", "expected an operand but found ')'", 11),
        ("userId in ('a',)", "expected an operand but found ')'", 15),
        ("userId in ('a' 'b')", "expected ')'", 15),
        ("userId eq 'a',", "unexpected ','", 13),
    ],
)
def test_syntax_errors(text: str, fragment: str, position: int) -> None:
    """Malformed filters raise FilterError naming the problem and its position."""
    err = error(text)
    assert fragment in str(err)
    assert err.position == position
    assert f"position {position}" in str(err) or position == 0


@pytest.mark.parametrize(
    "literal",
    [
        "1" * 5000,  # more digits than Python converts (4,300)
        "-" + "9" * 5000,
        "+" + "0" * 5000 + "2147483648",
        "99999999999",
    ],
    ids=["5000-digits", "minus-5000-digits", "leading-zeros-then-too-big", "11-digits"],
)
def test_huge_integer_literal_is_out_of_range(literal: str) -> None:
    """An integer literal of any length is an int32 or out of range, never a crash."""
    err = error(f"length(userId) eq {literal}")
    assert "out of range" in str(err)
    assert err.position == 18
    assert len(str(err)) < 200  # the literal is quoted cut short


@pytest.mark.parametrize(
    ("literal", "value"),
    [("0" * 5000 + "7", 7), ("-" + "0" * 5000 + "2147483648", -(2**31)), ("+0", 0), ("-0", 0)],
    ids=["zeros-7", "zeros-int32-min", "+0", "-0"],
)
def test_leading_zeros_do_not_count(literal: str, value: int) -> None:
    """Leading zeros are allowed in any number, as the grammar's ``[0-9]+`` says."""
    assert run(f"{literal} eq {value}")


def test_errors_quote_a_long_filter_cut_short() -> None:
    """A long filter's error names the offending part by its start, not all of it."""
    text = "concat(userId, '" + "x" * 10_000 + "')"
    message = str(error(text))
    assert "Type 'string', expect 'bool'" in message
    assert len(message) < 200


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("userId", "Invalid syntax for 'userId' at position 0: Type 'string', expect 'bool'."),
        ("groups", "Invalid syntax for 'groups' at position 0: Type 'collection', expect 'bool'."),
        ("null", "Invalid syntax for 'null' at position 0: Type 'null', expect 'bool'."),
        ("length(userId)", "for 'length(userId)' at position 0: Type 'int', expect 'bool'."),
        ("userId and true", "for 'userId' at position 0: Type 'string', expect 'bool'."),
        ("true or 'a'", "for ''a'' at position 8: Type 'string', expect 'bool'."),
        ("not 'g' in groups", "for 'not 'g'' at position 0: Type 'string', expect 'bool'."),
        ("not userId eq 'a'", "for 'not userId' at position 0: Type 'string', expect 'bool'."),
        ("userId eq 1", "for '1' at position 10: Type 'int', expect 'string'."),
        ("length(userId) eq 'a'", "for ''a'' at position 18: Type 'string', expect 'int'."),
        ("true eq 'a'", "Type 'string', expect 'bool'."),
        ("userId gt 'a'", "for 'userId' at position 0: Type 'string', expect 'int'."),
        ("1 lt userId", "for 'userId' at position 5: Type 'string', expect 'int'."),
        ("true lt false", "Type 'bool', expect 'int'."),
        ("endswith(userId, 'a') gt 1", "Type 'bool', expect 'int'."),
        ("groups eq 'a'", "Type 'collection', expect 'string' or 'int' or 'bool'."),
        ("'a' eq groups", "Type 'collection', expect 'string' or 'int' or 'bool'."),
        ("'a' in userId", "for 'userId' at position 7: Type 'string', expect 'collection'."),
        ("'a' in 'abc'", "Type 'string', expect 'collection'."),
        ("1 in groups", "for '1' at position 0: Type 'int', expect 'string'."),
        ("groups in groups", "Type 'collection', expect 'string'."),
        ("userId in ('a', 1)", "for '1' at position 16: Type 'int', expect 'string'."),
        ("userId in ('a', groups)", "Type 'collection', expect 'string' or 'int' or 'bool'."),
        ("length(userId) in (1, true)", "for 'true' at position 22: Type 'bool', expect 'int'."),
        ("tolower(1) eq 'a'", "for '1' at position 8: Type 'int', expect 'string'."),
        ("tolower(groups) eq 'a'", "Type 'collection', expect 'string'."),
        ("concat(userId, 1) eq 'a'", "for '1' at position 15: Type 'int', expect 'string'."),
        ("startswith(groups, 'a')", "Type 'collection', expect 'string'."),
        ("contains(userId, true)", "Type 'bool', expect 'string'."),
        ("indexof(userId, 2) eq 1", "Type 'int', expect 'string'."),
        ("substring(userId, '1') eq 'a'", "for ''1'' at position 18: Type 'string', expect 'int'."),
        ("substring(userId, null) eq 'a'", "Type 'null', expect 'int'."),
        ("substring(userId, 1, 'x') eq 'a'", "Type 'string', expect 'int'."),
        ("length(1) eq 1", "Type 'int', expect 'string' or 'collection'."),
        ("length(true) eq 1", "Type 'bool', expect 'string' or 'collection'."),
        ("tolower(userId)", "Type 'string', expect 'bool'."),
    ],
)
def test_type_errors(text: str, message: str) -> None:
    """Type errors are caught at parse time and name the offending sub-expression."""
    assert message in str(error(text))


# -- limits ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("joiner", [" or ", " and "])
def test_clause_limit_on_comparisons(joiner: str) -> None:
    """Up to MAX_CLAUSES comparisons are accepted; one more is rejected."""
    clauses = [f"userId ne 'u{i}'" for i in range(MAX_CLAUSES + 1)]
    assert parse_filter(joiner.join(clauses[:MAX_CLAUSES])).matches("c", "x", ())
    err = error(joiner.join(clauses))
    assert f"more than {MAX_CLAUSES} clauses" in str(err)
    assert err.position is not None and err.position > 0


@pytest.mark.parametrize(
    "clause",
    [
        "true",
        "'g{}' in groups",
        "startswith(userId, '{}')",
        "not (userId eq '{}')",
        "(userId eq '{}')",
    ],
)
@pytest.mark.parametrize("joiner", [" or ", " and "])
def test_clause_limit_counts_each_kind(clause: str, joiner: str) -> None:
    """Literals, `in`, boolean functions and negated comparisons each count as one clause."""
    parse_filter(joiner.join(clause.format(i) for i in range(MAX_CLAUSES)))
    assert "clauses" in str(error(joiner.join(clause.format(i) for i in range(MAX_CLAUSES + 1))))


def test_clause_limit_across_parentheses() -> None:
    """Clauses inside nested groups add up."""
    pair = "(userId eq 'a{0}' or 'g{0}' in groups)"
    half = MAX_CLAUSES // 2
    assert parse_filter(" and ".join(pair.format(i) for i in range(half)))
    assert "clauses" in str(error(" and ".join(pair.format(i) for i in range(half + 1))))


def test_comparison_of_boolean_functions_is_one_clause() -> None:
    """`startswith(...) eq true` is a single clause, not two."""
    text = " or ".join(f"startswith(userId, '{i}') eq true" for i in range(MAX_CLAUSES))
    assert parse_filter(text).matches("c", "7", ())


@pytest.mark.parametrize(
    "template",
    ["{open}true{close}", "{nots}true", "length({fns}userId{close}) eq 1"],
)
def test_nesting_limit(template: str) -> None:
    """Nesting up to MAX_DEPTH levels is fine; deeper is a FilterError, never a RecursionError."""

    def build(depth: int) -> str:
        return template.format(
            open="(" * depth,
            close=")" * depth,
            nots="not " * depth,
            fns="tolower(" * depth,
        )

    ok = MAX_DEPTH - 1 if template.startswith("length") else MAX_DEPTH
    assert parse_filter(build(ok)).matches("c", "u", ()) in (True, False)
    assert "nested more than" in str(error(build(ok + 1)))
    assert "nested more than" in str(error(build(10_000)))


def test_long_chain_evaluates_without_recursion() -> None:
    """A maximal `and` chain evaluates iteratively."""
    text = " and ".join(f"userId ne 'x{i}'" for i in range(MAX_CLAUSES))
    assert parse_filter(text).matches("c", "u", ())


# -- the Filter object -----------------------------------------------------------------------------


def test_filter_is_reusable_across_connections() -> None:
    """One compiled filter evaluates many connections independently."""
    flt = parse_filter("'vip' in groups or startswith(connectionId, 'admin-')")
    results = [flt.matches(f"c{i}", None, {"vip"} if i % 3 == 0 else set()) for i in range(9)]
    assert results == [i % 3 == 0 for i in range(9)]
    assert flt.matches("admin-7", "u", ())


def test_filter_is_frozen_and_compares_by_text() -> None:
    """Filters are immutable, hashable and equal when their text is equal."""
    flt = Filter("userId eq 'a'")
    assert flt == Filter("userId eq 'a'") and hash(flt) == hash(Filter("userId eq 'a'"))
    assert flt != Filter("userId eq 'b'")
    assert flt.text == "userId eq 'a'" and "userId eq 'a'" in repr(flt)
    with pytest.raises(dataclasses.FrozenInstanceError):
        flt.text = "true"  # type: ignore[misc]


def test_parse_filter_caches() -> None:
    """Repeated parses of the same text return the same compiled object."""
    assert parse_filter("userId eq 'cached'") is parse_filter("userId eq 'cached'")


def test_filter_constructor_validates() -> None:
    """Building a Filter directly parses it too."""
    with pytest.raises(FilterError):
        Filter("userId eq")


def test_filter_error_is_value_error() -> None:
    """FilterError is a ValueError whose str() is the message for the 400 body."""
    err = error("userId eq")
    assert isinstance(err, ValueError)
    assert (
        str(err)
        == err.message
        == "Invalid syntax at position 9: expected an operand but found end of filter."
    )
