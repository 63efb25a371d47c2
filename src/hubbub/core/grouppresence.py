"""Which group presence events (``joined``, ``left``) an event handler receives.

A hub's event handler may ask for group presence events: ``event_names`` among ``joined`` and
``left`` (none: no presence events), and ``group_filters``, patterns selecting the groups (none:
every group). The patterns use the syntax of the wildcard group roles (``*``, ``?``, ``**``,
``\\``). Events are CloudEvents ``azure.webpubsub.gp.joined`` / ``.left`` with the body
``{"group": "<group>"}`` (see ``protocol.cloudevents``), sent without waiting for the answer.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from hubbub.core.roles import pattern_matches, validate_pattern

__all__ = ["GROUP_PRESENCE_EVENTS", "GroupPresenceSettings"]

GROUP_PRESENCE_EVENTS = ("joined", "left")


@dataclass(frozen=True, slots=True)
class GroupPresenceSettings:
    """The presence events of one event handler."""

    event_names: frozenset[str] = frozenset()
    group_filters: tuple[str, ...] = ()

    @classmethod
    def parse(
        cls, event_names: Iterable[str], group_filters: Iterable[str] = ()
    ) -> GroupPresenceSettings:
        """Validate settings as given in a configuration.

        Raises:
            ValueError: an unknown event name or an invalid pattern (the message says which).
        """
        names = frozenset(name.lower() for name in event_names)
        unknown = sorted(names.difference(GROUP_PRESENCE_EVENTS))
        if unknown:
            raise ValueError(
                f"unknown group presence event {unknown[0]!r}, expected joined or left"
            )
        filters = tuple(group_filters)
        for pattern in filters:
            validate_pattern(pattern)
        return cls(names, filters)

    def wants(self, event: str, group: str) -> bool:
        """True when the handler receives ``event`` for ``group``."""
        if event not in self.event_names:
            return False
        return not self.group_filters or any(pattern_matches(p, group) for p in self.group_filters)
