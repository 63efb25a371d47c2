"""Unit tests for client permission roles and wildcard group patterns (client-protocols.md §7)."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable

import pytest

from hubbub.core import roles
from hubbub.core.roles import (
    MAX_GROUP_NAME_LENGTH,
    MAX_PATTERN_LENGTH,
    MAX_PATTERN_STARS,
    Permission,
    RoleError,
    RoleSet,
    pattern_matches,
    validate_pattern,
)

SEND = Permission.SEND_TO_GROUP
JOIN = Permission.JOIN_LEAVE_GROUP


def reference_match(pattern: str, name: str) -> bool:
    """Match by plain recursion straight from the §7 rules, as an oracle for small inputs."""
    if not pattern:
        return not name
    head = pattern[0]
    if pattern.startswith("**"):
        rest = pattern.lstrip("*")
        return any(reference_match(rest, name[i:]) for i in range(len(name) + 1))
    if head == "*":
        for i in range(len(name) + 1):
            if reference_match(pattern[1:], name[i:]):
                return True
            if i < len(name) and name[i] == ".":
                return False
        return False
    if not name:
        return False
    if head == "?":
        return name[0] != "." and reference_match(pattern[1:], name[1:])
    if head == "\\":
        return name[0] == pattern[1] and reference_match(pattern[2:], name[1:])
    return name[0] == head and reference_match(pattern[1:], name[1:])


# -- pattern matching ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        # client-protocols.md §7 examples
        ("chat-*", "chat-room", True),
        ("chat-*", "chat.1", False),
        ("clientA.**", "clientA.alpha.room1", True),
        ("clientA.rooms.?1", "clientA.rooms.a1", True),
        ("clientA.rooms.?1", "clientA.rooms.1", False),
        ("literal\\*star", "literal*star", True),
        # concept-wildcard-group-roles examples
        ("chat-*", "chat-1", True),
        ("chat-*", "xchat-1", False),
        ("clientA.*", "clientA.alpha", True),
        ("clientA.*", "clientA.1", True),
        ("clientA.*", "clientA.alpha.room1", False),
        ("clientA.*", "clientB.alpha", False),
        ("clientA.**", "clientA.alpha", True),
        ("clientA.**", "clientB.anything", False),
        ("clientA.rooms.?1", "clientA.rooms.11", True),
        ("clientA.rooms.?1", "clientA.rooms.a.1", False),
        ("literal\\*star", "literalXstar", False),
        ("project\\*123", "project*123", True),
        ("project\\*123", "project1123", False),
    ],
)
def test_documented_pattern_examples(pattern: str, name: str, expected: bool) -> None:
    """Every documented pattern example matches as documented."""
    assert pattern_matches(pattern, name) is expected


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("chat-*", "chat-", True),
        ("chat-*", "chat", False),
        ("*", "", True),
        ("*", "abc", True),
        ("*", "a.b", False),
        ("**", "", True),
        ("**", "a.b.c", True),
        ("***", "a.b.c", True),
        ("a**b", "ab", True),
        ("a**b", "a.x.b", True),
        ("a**b", "a.x.c", False),
        ("a.**", "a.", True),
        ("a.**", "a", False),
        ("*.*", "a.b", True),
        ("*.*", ".", True),
        ("*.*", "a.b.c", False),
        ("?", "a", True),
        ("?", "", False),
        ("?", ".", False),
        ("??", "ab", True),
        ("??", "a", False),
        ("a?c", "abc", True),
        ("a?c", "a.c", False),
        ("a\\?c", "a?c", True),
        ("a\\?c", "abc", False),
        ("a\\\\b", "a\\b", True),
        ("a\\\\*", "a\\xyz", True),
        ("Chat-*", "chat-1", False),
        ("chat-*", "CHAT-1", False),
        ("a+b(c)[d]$^|{1}", "a+b(c)[d]$^|{1}", True),
        ("a+b*", "aab", False),
        ("*", "line\nbreak", True),
        ("**", "a\n.b", True),
        ("x.*.y", "x..y", True),
        ("*a*b", "ccacb", True),
        ("*a*b", "cca.cb", False),
        ("**a*b", "cc.a.xab", True),
        ("*-*-*-*-*", "a-b-c-d-e", True),
        ("*-*-*-*-*", "a-b-c-d", False),
        ("*-*-*-*-*", "----", True),
        ("**-*-**", "a.b-c-d.e", True),
        ("**-*-**", "a.b-c.d-e", False),
        ("tenant.*.room-??", "tenant.t1.room-42", True),
        ("tenant.*.room-??", "tenant.t1.room-4", False),
    ],
)
def test_pattern_rules(pattern: str, name: str, expected: bool) -> None:
    """`?`, `*`, `**` and escapes follow §7; matching is whole-name and case-sensitive."""
    assert pattern_matches(pattern, name) is expected
    assert reference_match(pattern, name) is expected


def _patterns() -> list[str]:
    pieces = ["a", ".", "?", "*", "\\*"]
    return ["".join(p) for n in range(1, 5) for p in itertools.product(pieces, repeat=n)]


def _names() -> list[str]:
    return ["".join(p) for n in range(4) for p in itertools.product("ab.*", repeat=n)]


@pytest.mark.parametrize("engine", [roles._regex_matcher, roles._nfa_matcher])
def test_both_engines_agree_with_reference(
    engine: Callable[[list[tuple[roles._Tok, str]]], Callable[[str], bool]],
) -> None:
    """The regex and the bit-set automaton match exactly like the oracle on small inputs."""
    names = _names()
    for pattern in _patterns():
        match = engine(roles._tokenize(pattern))
        for name in names:
            assert match(name) is reference_match(pattern, name), (pattern, name)


@pytest.mark.parametrize(
    ("pattern", "name"),
    [
        ("*-*-*-*-*", "-" * (MAX_GROUP_NAME_LENGTH - 1) + "."),
        ("*a*a*a*a*b", "a" * MAX_GROUP_NAME_LENGTH),
        ("**a**a*b", "a" * MAX_GROUP_NAME_LENGTH),
        ("*?*?*?*?*x", "y" * MAX_GROUP_NAME_LENGTH),
    ],
)
def test_many_stars_do_not_backtrack(pattern: str, name: str) -> None:
    """Patterns with several stars match client-chosen names in linear time."""
    assert pattern_matches(pattern, name) is False


def test_pattern_matches_rejects_invalid_pattern() -> None:
    """An invalid pattern raises RoleError instead of matching anything."""
    with pytest.raises(RoleError):
        pattern_matches("a\\b", "a\\b")


# -- pattern validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pattern",
    [
        "a",
        "*",
        "**",
        "*" * MAX_PATTERN_STARS,
        "**.**.*",
        "*a*b*c*d*",
        "a\\*b",
        "a\\\\b",
        "a\\?b",
        "\\*" * 10,
        "?" * 10,
        "x" * MAX_PATTERN_LENGTH,
        "tenant.*.room",
    ],
)
def test_valid_patterns(pattern: str) -> None:
    """Well-formed patterns, escaped stars not counting toward the limit, validate."""
    validate_pattern(pattern)


@pytest.mark.parametrize(
    ("pattern", "fragment"),
    [
        ("", "must not be empty"),
        ("*" * (MAX_PATTERN_STARS + 1), "6 '*' characters; at most 5"),
        ("***.***", "6 '*' characters"),
        ("**.**.**", "6 '*' characters"),
        ("*a*b*c*d*e*", "6 '*' characters"),
        ("a\\", "lone '\\' at position 1"),
        ("a\\b", "Invalid escape '\\b' at position 1"),
        ("a\\.", "Invalid escape '\\.'"),
        ("\\\\\\", "lone '\\' at position 2"),
        ("x" * (MAX_PATTERN_LENGTH + 1), "longer than 1024"),
    ],
)
def test_invalid_patterns(pattern: str, fragment: str) -> None:
    """Malformed patterns raise RoleError saying what is wrong."""
    with pytest.raises(RoleError) as info:
        validate_pattern(pattern)
    assert fragment in str(info.value)
    assert isinstance(info.value, ValueError)


# -- role sets -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role_list", "permission", "group", "expected"),
    [
        ([], SEND, "g", False),
        ([], JOIN, "g", False),
        (["webpubsub.joinLeaveGroup"], JOIN, "anything", True),
        (["webpubsub.joinLeaveGroup"], SEND, "anything", False),
        (["webpubsub.sendToGroup"], SEND, "anything.at.all", True),
        (["webpubsub.sendToGroup"], JOIN, "anything", False),
        (["webpubsub.sendToGroup.g1"], SEND, "g1", True),
        (["webpubsub.sendToGroup.g1"], SEND, "g2", False),
        (["webpubsub.sendToGroup.g1"], SEND, "G1", False),
        (["webpubsub.sendToGroup.g1"], JOIN, "g1", False),
        (["webpubsub.joinLeaveGroup.a.b.c"], JOIN, "a.b.c", True),
        (["webpubsub.joinLeaveGroup.a.b.c"], JOIN, "a.b", False),
        (["webpubsub.joinLeaveGroup.a.b.c"], JOIN, "c", False),
        (["webpubsub.joinLeaveGroup.with space"], JOIN, "with space", True),
        (["webpubsub.joinLeaveGroups.chat-*"], JOIN, "chat-1", True),
        (["webpubsub.joinLeaveGroups.chat-*"], JOIN, "chat.1", False),
        (["webpubsub.joinLeaveGroups.chat-*"], SEND, "chat-1", False),
        (["webpubsub.sendToGroups.clientA.**"], SEND, "clientA.alpha.room1", True),
        (["webpubsub.sendToGroups.clientA.**"], SEND, "clientB.alpha", False),
        (["webpubsub.sendToGroup.chat-*"], SEND, "chat-*", True),
        (["webpubsub.sendToGroup.chat-*"], SEND, "chat-1", False),
        (["webpubsub.sendToGroups.literal\\*star"], SEND, "literal*star", True),
        (["webpubsub.sendToGroups.literal\\*star"], SEND, "literalXstar", False),
        (["webpubsub.sendToGroups.a", "webpubsub.sendToGroups.b.*"], SEND, "b.x", True),
        (["webpubsub.sendToGroups.a.*", "webpubsub.sendToGroups.b.*"], SEND, "c.x", False),
        (["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup.g"], SEND, "g", True),
        (["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup.g"], JOIN, "h", True),
        (["webpubsub.sendToGroups.******", "webpubsub.sendToGroup.ok"], SEND, "ok", True),
        (["webpubsub.sendToGroups.******", "webpubsub.sendToGroup.ok"], SEND, "other", False),
        (["webpubsub.sendToGroups.bad\\escape"], SEND, "bad\\escape", False),
        (["WebPubSub.SendToGroup"], SEND, "g", False),
        (["webpubsub.sendtogroup"], SEND, "g", False),
        (["webpubsub.SendToGroup.g"], SEND, "g", False),
        (["webpubsub.sendToGroupX"], SEND, "g", False),
        (["webpubsub.sendToGroupsX.g"], SEND, "g", False),
        (["webpubsub.sendToGroups"], SEND, "g", False),
        (["webpubsub.sendToGroups."], SEND, "", False),
        (["webpubsub.sendToGroup."], SEND, "", False),
        (["webpubsub.sendToGroup. "], SEND, " ", False),
        (["sendToGroup", "admin", "webpubsub.", ""], SEND, "g", False),
        ([" webpubsub.sendToGroup"], SEND, "g", False),
    ],
)
def test_role_set_allows(
    role_list: list[str], permission: Permission, group: str, expected: bool
) -> None:
    """Any-group, literal and wildcard roles grant exactly what §7 says."""
    assert RoleSet.parse(role_list).allows(permission, group) is expected


def test_literal_role_group_length_limit() -> None:
    """A literal role naming a group longer than group names may be is ignored."""
    longest = "g" * MAX_GROUP_NAME_LENGTH
    too_long = longest + "g"
    role_set = RoleSet.parse(
        [f"webpubsub.sendToGroup.{longest}", f"webpubsub.sendToGroup.{too_long}"]
    )
    assert role_set.allows(SEND, longest)
    assert not role_set.allows(SEND, too_long)


def test_raw_keeps_every_role() -> None:
    """Unknown and malformed roles are ignored for permissions but kept in raw."""
    given = ["x", "webpubsub.sendToGroups.******", "webpubsub.sendToGroup"]
    role_set = RoleSet.parse(iter(given))
    assert role_set.raw == tuple(given)
    assert role_set.allows(SEND, "g")


def test_parse_drops_non_strings() -> None:
    """Non-string items, possible in loosely typed JSON claims, are dropped."""
    role_set = RoleSet.parse(["webpubsub.sendToGroup.g", 7, None])  # type: ignore[list-item]
    assert role_set.raw == ("webpubsub.sendToGroup.g",)


def test_accessors_for_layering_runtime_grants() -> None:
    """allows_all, literal_groups and pattern_allows expose each kind of grant separately."""
    role_set = RoleSet.parse(
        [
            "webpubsub.joinLeaveGroup",
            "webpubsub.sendToGroup.a.b",
            "webpubsub.sendToGroups.lit\\?",
            "webpubsub.sendToGroups.room-*",
        ]
    )
    assert role_set.allows_all(JOIN) and not role_set.allows_all(SEND)
    assert role_set.literal_groups(SEND) == frozenset({"a.b", "lit?"})
    assert role_set.literal_groups(JOIN) == frozenset()
    assert role_set.pattern_allows(SEND, "room-1") and not role_set.pattern_allows(SEND, "a.b")
    assert not role_set.pattern_allows(JOIN, "room-1")


def test_role_set_is_frozen_and_compares_by_raw() -> None:
    """RoleSets are immutable, hashable and equal when built from the same roles."""
    first = RoleSet.parse(["webpubsub.sendToGroup"])
    assert first == RoleSet(("webpubsub.sendToGroup",))
    assert hash(first) == hash(RoleSet(("webpubsub.sendToGroup",)))
    assert first != RoleSet.parse(["webpubsub.joinLeaveGroup"])
    assert RoleSet() == RoleSet.parse([]) and not RoleSet().allows(SEND, "g")
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.raw = ()  # type: ignore[misc]


@pytest.mark.parametrize(("value", "member"), [("sendToGroup", SEND), ("joinLeaveGroup", JOIN)])
def test_permission_values(value: str, member: Permission) -> None:
    """Permission values are the names used in roles and the REST permission routes."""
    assert Permission(value) is member and member.value == value
