"""Message TTL: deadlines fixed at acceptance, expired copies dropped."""

from __future__ import annotations

import pytest

from hubbub.core.expiry import deadline, is_expired, split_expired, validate_ttl


def test_deadline_and_expiry() -> None:
    """No TTL never expires; a copy expires exactly at its deadline."""
    assert deadline(100.0, None) is None and deadline(100.0, 0) is None
    assert deadline(100.0, 30) == 130.0
    assert not is_expired(None, 10**9)
    assert not is_expired(130.0, 129.999)
    assert is_expired(130.0, 130.0)


def test_split_keeps_order() -> None:
    """Waiting copies split into live and expired, each in order."""
    queue = [("a", None), ("b", 5.0), ("c", 20.0), ("d", 1.0), ("e", None)]
    live, dropped = split_expired(queue, lambda item: item[1], now=10.0)
    assert [name for name, _ in live] == ["a", "c", "e"]
    assert [name for name, _ in dropped] == ["b", "d"]


@pytest.mark.parametrize(("given", "kept"), [(0, None), (1, 1), (300, 300)])
def test_validate_ttl(given: int, kept: int | None) -> None:
    """0-300 is accepted, 0 meaning none."""
    assert validate_ttl(given) == kept


@pytest.mark.parametrize("given", [-1, 301])
def test_validate_ttl_refuses(given: int) -> None:
    """Outside 0-300 is refused."""
    with pytest.raises(ValueError, match="between 0 and 300"):
        validate_ttl(given)
