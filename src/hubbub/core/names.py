"""Validation of hub, group and event names (rest-api.md §2, client-protocols.md §3.1)."""

from __future__ import annotations

import re

from hubbub.errors import BadRequestError
from hubbub.limits import MAX_GROUP_NAME_LENGTH
from hubbub.types import GroupName, HubName

__all__ = ["validate_group", "validate_hub"]

_HUB = re.compile(r"[A-Za-z][A-Za-z0-9_`,.\[\]]{0,127}")


def validate_hub(name: str) -> HubName:
    """Return the normalised (lower-case) hub name.

    Raises:
        BadRequestError: the name does not match the service's hub pattern.
    """
    if not _HUB.fullmatch(name):
        raise BadRequestError(f"invalid hub name {name!r}")
    return HubName(name.lower())


def validate_group(name: str) -> GroupName:
    """Return ``name`` as a group name.

    Raises:
        BadRequestError: empty, only whitespace, or longer than 1024 characters.
    """
    if not name or len(name) > MAX_GROUP_NAME_LENGTH or name.isspace():
        raise BadRequestError(f"invalid group name {name[:64]!r}")
    return GroupName(name)
