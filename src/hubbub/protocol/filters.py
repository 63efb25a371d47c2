"""OData ``filter`` subset of the data-plane REST API (rest-api.md §6).

A filter is parsed and type-checked once into a tree of closures over
``(connection_id, user_id, groups)``; :meth:`Filter.matches` only calls that tree, so one filter
is cheap to evaluate against every candidate connection of a publish. Keywords, literals and
function names are lowercase and case-sensitive as in OData; only the identifiers ``userId``,
``connectionId`` and ``groups`` are matched case-insensitively (§6 "Identifiers").
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import operator
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any, NoReturn, cast

__all__ = [
    "MAX_CLAUSES",
    "MAX_DEPTH",
    "Filter",
    "FilterError",
    "parse_filter",
    "service_message",
]

MAX_CLAUSES = 100
"""Most atomic predicates a filter may hold (§6 "Size limit": roughly 100 clauses)."""

MAX_DEPTH = 32
"""Deepest nesting of parentheses, ``not`` and function calls; bounds parser recursion."""

_Fn = Callable[[str, str | None, Collection[str]], object]
_BoolFn = Callable[[str, str | None, Collection[str]], bool]
_IntFn = Callable[[str, str | None, Collection[str]], int | None]

_INT32 = range(-(2**31), 2**31)
_INT32_DIGITS = len(str(2**31))
"""Digits of the longest int32 literal: longer ones are out of range without converting them
(Python refuses to convert more than 4,300 digits)."""
_SHOWN_CHARS = 60
"""Longest part of a filter quoted in an error message."""
_COMPARISONS = frozenset({"eq", "ne", "gt", "ge", "lt", "le"})
_KEYWORDS = _COMPARISONS | {"and", "or", "not", "in", "true", "false", "null"}
_ORDERING: dict[str, Callable[[int, int], bool]] = {
    "gt": operator.gt,
    "ge": operator.ge,
    "lt": operator.lt,
    "le": operator.le,
}
# Possessive: inside a string a doubled quote is always an escape, never a close and reopen.
_TOKEN_RE = re.compile(
    r"(?P<ws>\s+)|(?P<str>'(?:[^']|'')*+')|(?P<int>[+-]?[0-9]+(?![A-Za-z0-9_]))"
    r"|(?P<word>[A-Za-z_][A-Za-z0-9_]*)|(?P<punct>[(),])"
)


class FilterError(ValueError):
    """Invalid filter; ``str(e)`` describes the problem, :attr:`service_message` is the
    service's text for the same filter.

    Attributes:
        message: Description naming the offending part of the filter and its position.
        position: Zero-based character offset of the offending part, when known.
        part: The part of the filter the service names: the whole filter for a syntax error,
            the offending sub-expression for a type error.
        detail: The service's description of the problem (OData's texts for syntax errors).
    """

    def __init__(
        self,
        message: str,
        position: int | None = None,
        *,
        part: str = "",
        detail: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.position = position
        self.part = part
        self.detail = detail if detail is not None else message.rstrip(".")

    @property
    def service_message(self) -> str:
        """``Invalid syntax for '<part>': <detail>. (Parameter 'filter')`` (rest-api.md §6)."""
        return f"Invalid syntax for '{self.part}': {self.detail}. (Parameter 'filter')"


class _Kind(enum.Enum):
    BOOL = "bool"
    INT = "int"
    STRING = "string"
    NULL = "null"
    COLLECTION = "collection"
    UNBOUND = "unbound"  # an unknown identifier whose error waits for its first use


_STR = (_Kind.STRING, _Kind.NULL)  # a string_expression may be the literal null (§6 EBNF)
_INT = (_Kind.INT,)
_IDENTIFIERS: dict[str, tuple[_Kind, _Fn]] = {
    "userid": (_Kind.STRING, lambda c, u, g: u),
    "connectionid": (_Kind.STRING, lambda c, u, g: c),
    "groups": (_Kind.COLLECTION, lambda c, u, g: g),
}


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "str", "int", "word", "punct" or "eof"
    raw: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class _Expr:
    """A type-checked sub-expression and its compiled closure."""

    kind: _Kind
    fn: _Fn
    start: int
    end: int
    clauses: int = 0
    const: bool = False
    value: object = None


def _constant(kind: _Kind, value: object, start: int, end: int) -> _Expr:
    return _Expr(kind, lambda c, u, g: value, start, end, const=True, value=value)


def _clip(text: str) -> str:
    """``text`` cut short for an error message, so that a huge filter gets a short answer."""
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "..."


def _show(raw: str) -> str:
    raw = _clip(raw)
    return "end of filter" if not raw else (f'"{raw}"' if "'" in raw else f"'{raw}'")


def _integer(raw: str) -> int | None:
    """The value of an integer literal (``[+-]?[0-9]+``), None when it is outside int32."""
    digits = raw.lstrip("+-").lstrip("0") or "0"
    if len(digits) > _INT32_DIGITS:
        return None
    value = -int(digits) if raw.startswith("-") else int(digits)
    return value if value in _INT32 else None


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(text):
        found = _TOKEN_RE.match(text, pos)
        if found is None:
            _lex_error(text, pos)
        if found.lastgroup != "ws":
            tokens.append(_Token(found.lastgroup or "", found.group(), pos, found.end()))
        pos = found.end()
    tokens.append(_Token("eof", "", len(text), len(text)))
    return tokens


def _lex_error(text: str, pos: int) -> NoReturn:
    # The service's texts are Microsoft.OData's lexer errors (unconfirmed but for the syntax
    # error after a complete expression, which the service's answers show).
    if text[pos] == "'":
        detail = "unterminated string literal"
        odata = f"There is an unterminated string literal at position {len(text)} in '{text}'"
    elif bad := re.match(r"[+-]?[0-9][A-Za-z0-9_]*", text[pos:]):
        detail = f"invalid literal {_show(bad.group())} (only integer literals are supported)"
        odata = f"Syntax error at position {pos + len(bad.group())} in '{text}'"
    else:
        if text[pos] == '"':
            detail = "unexpected character '\"' (string literals use single quotes)"
        else:
            detail = f"unexpected character {_show(text[pos])}"
        odata = f"Syntax error: character '{text[pos]}' is not valid at position {pos} in '{text}'"
    raise FilterError(f"Invalid syntax at position {pos}: {detail}.", pos, part=text, detail=odata)


class _Parser:
    """Recursive-descent parser; precedence is not > comparison/in > and > or (§6)."""

    def __init__(self, text: str, *, defer_unknown: bool = False) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.index = 0
        self.depth = 0
        # The service binds identifiers after parsing, so a syntax error later in the filter
        # wins over an unknown identifier: deferring reproduces its choice of error.
        self.defer_unknown = defer_unknown

    def peek(self) -> _Token:
        return self.tokens[self.index]

    def advance(self) -> _Token:
        token = self.tokens[self.index]
        self.index = min(self.index + 1, len(self.tokens) - 1)
        return token

    def at(self, *raws: str) -> bool:
        token = self.tokens[self.index]
        return token.kind in ("word", "punct") and token.raw in raws

    def expect(self, raw: str) -> _Token:
        if not self.at(raw):
            token = self.peek()
            odata = f"')' or ',' expected at position {token.start} in '{self.text}'"
            self.syntax_error(token, f"expected '{raw}' but found {_show(token.raw)}", odata)
        return self.advance()

    def syntax_error(self, token: _Token, detail: str, odata: str | None = None) -> NoReturn:
        """Raise; the service's text is OData's, positioned after the offending token."""
        if odata is None:
            odata = f"Syntax error at position {token.end} in '{self.text}'"
        raise FilterError(
            f"Invalid syntax at position {token.start}: {detail}.",
            token.start,
            part=self.text,
            detail=odata,
        )

    def no_operand(self, token: _Token) -> NoReturn:
        self.syntax_error(
            token,
            f"expected an operand but found {_show(token.raw)}",
            f"Expression expected at position {token.start} in '{self.text}'",
        )

    def need(self, expr: _Expr, kinds: tuple[_Kind, ...], start: int | None = None) -> _Fn:
        """Returns the closure of ``expr`` after checking that its type is one of ``kinds``."""
        if expr.kind in kinds:
            return expr.fn
        if expr.kind is _Kind.UNBOUND:
            raise cast(FilterError, expr.value)
        begin = expr.start if start is None else start
        expected = " or ".join(f"'{kind.value}'" for kind in kinds if kind is not _Kind.NULL)
        part = self.text[begin : expr.end]
        detail = f"Type '{expr.kind.value}', expect {expected}"
        raise FilterError(
            f"Invalid syntax for '{_clip(part)}' at position {begin}: {detail}.",
            begin,
            part=part,
            detail=detail,
        )

    def boolean(self, expr: _Expr, start: int | None = None) -> _BoolFn:
        return cast(_BoolFn, self.need(expr, (_Kind.BOOL,), start))

    def limit(self, clauses: int, at: int) -> None:
        if clauses > MAX_CLAUSES:
            raise FilterError(
                f"Filter is too complex: more than {MAX_CLAUSES} clauses "
                f"(limit reached at position {at}).",
                at,
                part=self.text,
            )

    def parse(self) -> _BoolFn:
        if not self.text.strip():
            raise FilterError("Invalid syntax: the filter is empty.", 0, part=self.text)
        expr = self.parse_or()
        token = self.peek()
        if token.kind == "word" and (token.raw in _COMPARISONS or token.raw == "in"):
            self.syntax_error(token, f"unexpected '{token.raw}': comparisons do not chain")
        if token.kind == "word" and token.raw.lower() in _KEYWORDS:
            self.syntax_error(token, f"unexpected {_show(token.raw)}: operators are lowercase")
        if token.kind != "eof":
            self.syntax_error(token, f"unexpected {_show(token.raw)}, expected 'and' or 'or'")
        fn = self.boolean(expr)
        self.limit(max(1, expr.clauses), expr.start)
        return fn

    def parse_or(self) -> _Expr:
        return self.parse_chain("or", lambda: self.parse_chain("and", self.parse_comparison))

    def parse_chain(self, word: str, operand: Callable[[], _Expr]) -> _Expr:
        first = operand()
        if not self.at(word):
            return first
        fns, clauses, last = [self.boolean(first)], max(1, first.clauses), first
        while self.at(word):
            self.advance()
            last = operand()
            fns.append(self.boolean(last))
            clauses += max(1, last.clauses)
            self.limit(clauses, last.start)
        return _Expr(_Kind.BOOL, _chain(tuple(fns), word == "and"), first.start, last.end, clauses)

    def parse_comparison(self) -> _Expr:
        left = self.parse_unary()
        if self.at(*_COMPARISONS):
            op = self.advance().raw
            expr = self.compare(op, left, self.parse_unary())
        elif self.at("in"):
            self.advance()
            expr = self.parse_in(left)
        else:
            return left
        self.limit(expr.clauses, left.start)
        return expr

    def nested(self, token: _Token) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            self.syntax_error(token, f"filter is nested more than {MAX_DEPTH} levels deep")

    def parse_unary(self) -> _Expr:
        if not self.at("not"):
            return self.parse_primary()
        token = self.advance()
        self.nested(token)
        operand = self.parse_unary()
        self.depth -= 1
        fn = self.boolean(operand, token.start)
        clauses = max(1, operand.clauses)
        return _Expr(_Kind.BOOL, lambda c, u, g: not fn(c, u, g), token.start, operand.end, clauses)

    def parse_list(self) -> tuple[list[_Expr], int]:
        """Parses ``'(' expr (',' expr)* ')'``; returns the items and the end offset."""
        self.nested(self.expect("("))
        items = [self.parse_or()]
        while self.at(","):
            self.advance()
            items.append(self.parse_or())
        end = self.expect(")").end
        self.depth -= 1
        return items, end

    def parse_primary(self) -> _Expr:
        token = self.peek()
        if token.raw == "(":
            items, end = self.parse_list()
            if len(items) > 1:
                self.syntax_error(token, "a list is only allowed after 'in'")
            return dataclasses.replace(items[0], start=token.start, end=end)
        self.advance()
        if token.kind == "str":
            text = token.raw[1:-1].replace("''", "'")
            return _constant(_Kind.STRING, text, token.start, token.end)
        if token.kind == "int":
            value = _integer(token.raw)
            if value is None:
                self.syntax_error(token, f"integer literal {_show(token.raw)} is out of range")
            return _constant(_Kind.INT, value, token.start, token.end)
        if token.kind == "word":
            return self.word(token)
        self.no_operand(token)

    def word(self, token: _Token) -> _Expr:
        raw, start, end = token.raw, token.start, token.end
        if raw in ("true", "false"):
            return _constant(_Kind.BOOL, raw == "true", start, end)
        if raw == "null":
            return _constant(_Kind.NULL, None, start, end)
        if raw in _KEYWORDS:
            self.no_operand(token)
        if self.at("("):
            return self.call(token)
        if identifier := _IDENTIFIERS.get(raw.lower()):
            return _Expr(*identifier, start, end)
        hint = "; keywords and literals are lowercase" if raw.lower() in _KEYWORDS else ""
        detail = f"unknown identifier {_show(raw)}, expected userId, connectionId or groups{hint}"
        error = FilterError(
            f"Invalid syntax at position {start}: {detail}.",
            start,
            part=raw,
            detail=f"Could not find a property named '{raw}'",
        )
        if not self.defer_unknown:
            raise error
        return _Expr(_Kind.UNBOUND, lambda c, u, g: None, start, end, value=error)

    def call(self, name: _Token) -> _Expr:
        spec = _FUNCTIONS.get(name.raw)
        if spec is None:
            hint = "; function names are lowercase" if name.raw.lower() in _FUNCTIONS else ""
            self.syntax_error(name, f"unknown function {_show(name.raw)}{hint}")
        result, params, required, impl = spec
        args, end = self.parse_list()
        if not required <= len(args) <= len(params):
            counts = f"{required} or {len(params)}" if required < len(params) else f"{required}"
            self.syntax_error(
                name, f"function '{name.raw}' takes {counts} argument(s), got {len(args)}"
            )
        fns = [self.need(arg, kinds) for arg, kinds in zip(args, params, strict=False)]
        clauses = 1 if result is _Kind.BOOL else 0
        return _Expr(result, _apply(impl, fns), name.start, end, clauses)

    def compare(self, op: str, left: _Expr, right: _Expr) -> _Expr:
        clauses = max(1, left.clauses + right.clauses)
        if op in ("eq", "ne"):
            self.comparable(left, right)
            fn = _equality(left, right, negate=op == "ne")
        else:
            ints = (_Kind.INT, _Kind.NULL)
            lf, rf = cast(_IntFn, self.need(left, ints)), cast(_IntFn, self.need(right, ints))
            test = _ORDERING[op]

            def fn(c: str, u: str | None, g: Collection[str]) -> bool:
                a, b = lf(c, u, g), rf(c, u, g)
                # §6 null handling: ordering comparisons with null are false.
                return a is not None and b is not None and test(a, b)

        return _Expr(_Kind.BOOL, fn, left.start, right.end, clauses)

    def comparable(self, left: _Expr, *others: _Expr) -> None:
        """Checks operands of eq/ne/in: primitives of one type, null matching any type."""
        primitives = (_Kind.STRING, _Kind.INT, _Kind.BOOL, _Kind.NULL)
        self.need(left, primitives)
        for other in others:
            self.need(other, primitives)
            if _Kind.NULL not in (left.kind, other.kind):
                self.need(other, (left.kind,))

    def parse_in(self, left: _Expr) -> _Expr:
        if self.at("("):
            items, end = self.parse_list()
        else:
            target = self.parse_primary()
            items, end = [target], target.end
            self.need(target, (_Kind.COLLECTION,))
        if len(items) == 1 and items[0].kind is _Kind.COLLECTION:
            lf = self.need(left, _STR)

            def in_groups(c: str, u: str | None, g: Collection[str]) -> bool:
                value = lf(c, u, g)
                return value is not None and value in g

            return _Expr(_Kind.BOOL, in_groups, left.start, end, 1 + left.clauses)
        self.comparable(left, *items)
        clauses = 1 + left.clauses + sum(item.clauses for item in items)
        return _Expr(_Kind.BOOL, _membership(left, items), left.start, end, clauses)


def _chain(fns: tuple[_BoolFn, ...], conjunction: bool) -> _BoolFn:
    if len(fns) == 2:
        a, b = fns
        if conjunction:
            return lambda c, u, g: a(c, u, g) and b(c, u, g)
        return lambda c, u, g: a(c, u, g) or b(c, u, g)
    if conjunction:
        return lambda c, u, g: all(f(c, u, g) for f in fns)
    return lambda c, u, g: any(f(c, u, g) for f in fns)


def _equality(left: _Expr, right: _Expr, negate: bool) -> _BoolFn:
    # String equality is exact (case-sensitive); null equals only null (§6 "Comparison").
    if left.const and not right.const:
        left, right = right, left
    lf, rf, value, test = left.fn, right.fn, right.value, operator.ne if negate else operator.eq
    if right.const:
        return lambda c, u, g: test(lf(c, u, g), value)
    return lambda c, u, g: test(lf(c, u, g), rf(c, u, g))


def _membership(left: _Expr, items: list[_Expr]) -> _BoolFn:
    lf = left.fn
    if all(item.const for item in items):
        # Operand types were checked to agree, so True and 1 never share one set.
        values = frozenset(item.value for item in items)
        return lambda c, u, g: lf(c, u, g) in values
    fns = tuple(item.fn for item in items)
    return lambda c, u, g: any(lf(c, u, g) == f(c, u, g) for f in fns)


def _apply(impl: Callable[..., object], fns: list[_Fn]) -> _Fn:
    if len(fns) == 1:
        (a,) = fns
        return lambda c, u, g: impl(a(c, u, g))
    if len(fns) == 2:
        a, b = fns
        return lambda c, u, g: impl(a(c, u, g), b(c, u, g))
    return lambda c, u, g: impl(*(f(c, u, g) for f in fns))


# Function implementations (§6 "Functions" and "Null handling"): a null string argument gives
# null, except that the predicates give false and indexof gives -1.


def _predicate(test: Callable[[str, str], bool]) -> Callable[[str | None, str | None], bool]:
    return lambda a, b: a is not None and b is not None and test(a, b)


def _transform(op: Callable[[Any], object]) -> Callable[[Any], object]:
    return lambda value: None if value is None else op(value)


def _concat(a: str | None, b: str | None) -> str | None:
    # A null side is skipped, as in the reference emulator; the result is null only when both are.
    return b if a is None else (a if b is None else a + b)


def _substring(s: str | None, start: int | None, *count: int | None) -> str | None:
    # Out-of-range bounds give null rather than a clamped slice, as in the reference emulator.
    if s is None or start is None or not 0 <= start <= len(s):
        return None
    if not count:
        return s[start:]
    n = count[0]
    return s[start : start + n] if n is not None and 0 <= n <= len(s) - start else None


_FUNCTIONS: dict[str, tuple[_Kind, tuple[tuple[_Kind, ...], ...], int, Callable[..., object]]] = {
    "tolower": (_Kind.STRING, (_STR,), 1, _transform(str.lower)),
    "toupper": (_Kind.STRING, (_STR,), 1, _transform(str.upper)),
    "trim": (_Kind.STRING, (_STR,), 1, _transform(str.strip)),
    "substring": (_Kind.STRING, (_STR, _INT, _INT), 2, _substring),
    "concat": (_Kind.STRING, (_STR, _STR), 2, _concat),
    "endswith": (_Kind.BOOL, (_STR, _STR), 2, _predicate(str.endswith)),
    "startswith": (_Kind.BOOL, (_STR, _STR), 2, _predicate(str.startswith)),
    "contains": (_Kind.BOOL, (_STR, _STR), 2, _predicate(operator.contains)),
    "indexof": (_Kind.INT, (_STR, _STR), 2, lambda a, b: -1 if None in (a, b) else a.find(b)),
    "length": (_Kind.INT, ((*_STR, _Kind.COLLECTION),), 1, _transform(len)),
}


@dataclass(frozen=True)
class Filter:
    """A compiled filter, immutable and reusable for any number of evaluations.

    Constructing one parses and type-checks ``text``; equality and hashing use ``text`` only.

    Attributes:
        text: The filter exactly as given.

    Raises:
        FilterError: On construction, if ``text`` is not a valid filter.
    """

    text: str
    _match: _BoolFn = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_match", _Parser(self.text).parse())

    def matches(self, connection_id: str, user_id: str | None, groups: Collection[str]) -> bool:
        """Evaluates the filter against one connection.

        Args:
            connection_id: The connection's id.
            user_id: The connection's user id, or ``None`` for an anonymous connection.
            groups: The groups the connection is currently in; a set makes ``in groups`` O(1).

        Returns:
            True when the connection should receive the message.
        """
        return self._match(connection_id, user_id, groups)


def service_message(text: str) -> str | None:
    """The service's 400 message for ``text``, or None when it is a valid filter.

    ``Invalid syntax for '<part>': <detail>. (Parameter 'filter')``: ``@azure/web-pubsub``'s
    own tests read this text back (rest-api.md §6). The error chosen is the service's: a syntax
    error anywhere wins over an unknown identifier.
    """
    try:
        _Parser(text, defer_unknown=True).parse()
    except FilterError as exc:
        return exc.service_message
    try:
        parse_filter(text)
    except FilterError as exc:
        return exc.service_message
    return None


@functools.lru_cache(maxsize=256)
def parse_filter(text: str) -> Filter:
    """Parses and type-checks a filter (rest-api.md §6).

    Results are cached by text, since applications tend to resend the same filters. An empty
    or blank filter is an error: callers should skip filtering when the parameter is absent.

    Args:
        text: The OData filter expression, e.g. ``"userId eq 'user1' and 'g1' in groups"``.

    Returns:
        The compiled filter.

    Raises:
        FilterError: On a syntax or type error, or when the filter exceeds the size limits.
    """
    return Filter(text)
