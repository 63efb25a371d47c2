"""Permission roles of Web PubSub clients (client-protocols.md §7).

A connection's roles come from its access token or the connect handler. Without any role a
client may only send events; group operations need ``joinLeaveGroup`` / ``sendToGroup``
permissions, granted for every group, for one literal group, or for groups matching a wildcard
pattern. Runtime REST grants and revokes are layered on top by the caller, which can reuse
:meth:`RoleSet.allows_all`, :meth:`RoleSet.literal_groups` and :meth:`RoleSet.pattern_allows`.
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from hubbub.limits import MAX_GROUP_NAME_LENGTH, MAX_PATTERN_LENGTH, MAX_PATTERN_STARS

__all__ = [
    "MAX_GROUP_NAME_LENGTH",
    "MAX_PATTERN_LENGTH",
    "MAX_PATTERN_STARS",
    "Permission",
    "RoleError",
    "RoleSet",
    "pattern_matches",
    "validate_pattern",
]

_ROLE_PREFIX = "webpubsub."


class Permission(enum.Enum):
    """A group permission; the value is its name in roles and in the REST permission routes."""

    SEND_TO_GROUP = "sendToGroup"
    JOIN_LEAVE_GROUP = "joinLeaveGroup"


class RoleError(ValueError):
    """An invalid wildcard group pattern; ``str(e)`` says what is wrong and where."""


class _Tok(enum.Enum):
    LITERAL = "literal"
    ONE = "?"  # one character except '.'
    STAR = "*"  # zero or more characters except '.'
    GLOBSTAR = "**"  # zero or more characters, '.' included


def _tokenize(pattern: str) -> list[tuple[_Tok, str]]:
    """Splits a pattern into tokens, enforcing the §7 syntax rules."""
    if not pattern:
        raise RoleError("Pattern must not be empty.")
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise RoleError(f"Pattern is longer than {MAX_PATTERN_LENGTH} characters.")
    tokens: list[tuple[_Tok, str]] = []
    stars = i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            if i + 1 == len(pattern):
                raise RoleError(f"Pattern ends with a lone '\\' at position {i}.")
            if pattern[i + 1] not in "\\*?":
                raise RoleError(f"Invalid escape '\\{pattern[i + 1]}' at position {i}.")
            tokens.append((_Tok.LITERAL, pattern[i + 1]))
            i += 2
        elif char == "*":
            run = len(pattern) - i - len(pattern[i:].lstrip("*"))
            stars += run
            # Three or more stars still mean "anything": '**' followed by '*' adds nothing.
            tokens.append((_Tok.GLOBSTAR if run > 1 else _Tok.STAR, ""))
            i += run
        else:
            tokens.append((_Tok.ONE, "") if char == "?" else (_Tok.LITERAL, char))
            i += 1
    if stars > MAX_PATTERN_STARS:
        raise RoleError(f"Pattern has {stars} '*' characters; at most {MAX_PATTERN_STARS} allowed.")
    return tokens


def validate_pattern(pattern: str) -> None:
    """Checks a wildcard group pattern, e.g. from configuration or a REST request.

    Args:
        pattern: The pattern, without the ``webpubsub.<permission>Groups.`` role prefix.

    Raises:
        RoleError: If the pattern is empty, too long, has a bad or trailing ``\\`` escape, or
            has more than :data:`MAX_PATTERN_STARS` ``*`` characters.
    """
    _tokenize(pattern)


class _Compiled(NamedTuple):
    literal: str | None  # the group name when the pattern has no wildcard at all
    match: Callable[[str], bool]


def _regex_matcher(tokens: list[tuple[_Tok, str]]) -> Callable[[str], bool]:
    parts = {_Tok.ONE: "[^.]", _Tok.STAR: "[^.]*", _Tok.GLOBSTAR: ".*"}
    source = "".join(
        re.escape(text) if kind is _Tok.LITERAL else parts[kind] for kind, text in tokens
    )
    regex = re.compile(source, re.DOTALL)
    return lambda name: regex.fullmatch(name) is not None


def _nfa_matcher(tokens: list[tuple[_Tok, str]]) -> Callable[[str], bool]:
    """Simulates the pattern's automaton with bit sets: linear time for any group name.

    Bit ``i`` of the state set means "the first ``i`` tokens matched". A backtracking regex
    could take polynomial time with several stars, and group names are chosen by clients.
    """
    literal: dict[str, int] = {}
    one = star = globstar = 0
    for i, (kind, text) in enumerate(tokens):
        bit = 1 << i
        if kind is _Tok.LITERAL:
            literal[text] = literal.get(text, 0) | bit
        elif kind is _Tok.ONE:
            one |= bit
        elif kind is _Tok.STAR:
            star |= bit
        else:
            globstar |= bit
    loops, accept, dot = star | globstar, 1 << len(tokens), literal.get(".", 0)

    def closure(states: int) -> int:
        # A star may match nothing, so reaching it also reaches the token after it.
        while (grown := states | (states & loops) << 1) != states:
            states = grown
        return states

    start = closure(1)

    def match(name: str) -> bool:
        states = start
        for char in name:
            if char == ".":
                states = (states & dot) << 1 | states & globstar
            else:
                states = (states & (literal.get(char, 0) | one)) << 1 | states & loops
            if not states:
                return False
            states = closure(states)
        return bool(states & accept)

    return match


@functools.lru_cache(maxsize=1024)
def _compile(pattern: str) -> _Compiled:
    tokens = _tokenize(pattern)
    if all(kind is _Tok.LITERAL for kind, _ in tokens):
        text = "".join(text for _, text in tokens)
        return _Compiled(text, lambda name: name == text)
    wildcards = sum(kind in (_Tok.STAR, _Tok.GLOBSTAR) for kind, _ in tokens)
    # With at most one star a regex backtracks at most linearly, and it runs in C.
    return _Compiled(None, (_regex_matcher if wildcards <= 1 else _nfa_matcher)(tokens))


def pattern_matches(pattern: str, name: str) -> bool:
    """Tells whether a group name matches a wildcard pattern (§7 "Pattern syntax").

    ``?`` matches one character except ``.``, ``*`` zero or more characters except ``.``,
    ``**`` zero or more of any characters, and ``\\`` escapes ``\\``, ``*`` and ``?``.
    Matching is case-sensitive. Compiled patterns are cached.

    Args:
        pattern: The pattern, e.g. ``"clientA.**"``.
        name: The group name to test.

    Returns:
        True if the whole name matches the pattern.

    Raises:
        RoleError: If the pattern is invalid (see :func:`validate_pattern`).
    """
    return _compile(pattern).match(name)


def _valid_group_name(name: str) -> bool:
    return 0 < len(name) <= MAX_GROUP_NAME_LENGTH and not name.isspace()


@dataclass(frozen=True)
class RoleSet:
    """Parsed roles of one connection; immutable.

    Equality and hashing use :attr:`raw` only. Role strings that are not permission roles,
    literal roles naming an invalid group and invalid wildcard patterns are ignored (but kept in
    :attr:`raw`), as one bad role must not fail the whole connection.

    Attributes:
        raw: The role strings exactly as given.
    """

    raw: tuple[str, ...] = ()
    _all: frozenset[Permission] = field(init=False, repr=False, compare=False)
    _literals: dict[Permission, frozenset[str]] = field(init=False, repr=False, compare=False)
    _patterns: dict[Permission, tuple[Callable[[str], bool], ...]] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        every: set[Permission] = set()
        literals: dict[Permission, set[str]] = {p: set() for p in Permission}
        patterns: dict[Permission, list[Callable[[str], bool]]] = {p: [] for p in Permission}
        for role in self.raw:
            for permission in Permission:
                base = _ROLE_PREFIX + permission.value
                if role == base:
                    every.add(permission)
                elif role.startswith(base + "."):  # the group name may itself contain dots
                    group = role[len(base) + 1 :]
                    if _valid_group_name(group):
                        literals[permission].add(group)
                elif role.startswith(base + "s."):  # plural: a wildcard pattern
                    try:
                        compiled = _compile(role[len(base) + 2 :])
                    except RoleError:
                        continue
                    if compiled.literal is not None:
                        literals[permission].add(compiled.literal)
                    else:
                        patterns[permission].append(compiled.match)
        object.__setattr__(self, "_all", frozenset(every))
        object.__setattr__(self, "_literals", {p: frozenset(v) for p, v in literals.items()})
        object.__setattr__(self, "_patterns", {p: tuple(v) for p, v in patterns.items()})

    @classmethod
    def parse(cls, roles: Iterable[str]) -> RoleSet:
        """Builds a role set from the roles of a token or connect-handler response.

        Args:
            roles: Role strings; non-string items (from loosely typed JSON) are dropped.

        Returns:
            The parsed, immutable role set.
        """
        return _parsed(tuple(role for role in roles if isinstance(role, str)))

    def allows(self, permission: Permission, group: str) -> bool:
        """Tells whether the roles grant ``permission`` on ``group``.

        Args:
            permission: The permission the client request needs.
            group: The target group name (case-sensitive).

        Returns:
            True if an any-group, literal or wildcard role grants it.
        """
        return (
            permission in self._all
            or group in self._literals[permission]
            or any(match(group) for match in self._patterns[permission])
        )

    def allows_all(self, permission: Permission) -> bool:
        """Tells whether a role such as ``webpubsub.sendToGroup`` grants it on every group."""
        return permission in self._all

    def literal_groups(self, permission: Permission) -> frozenset[str]:
        """Returns the groups granted one by one, including wildcard-free patterns."""
        return self._literals[permission]

    def pattern_allows(self, permission: Permission, group: str) -> bool:
        """Tells whether a wildcard role (``webpubsub.<permission>Groups.<pattern>``) matches."""
        return any(match(group) for match in self._patterns[permission])


@functools.lru_cache(maxsize=1024)
def _parsed(roles: tuple[str, ...]) -> RoleSet:
    """Connections mostly share a few role lists; one immutable RoleSet serves them all."""
    return RoleSet(roles)
