"""The fast lane keeps its verdict on a send's URL, token and content type, not beyond the
token's lifetime."""

from __future__ import annotations

import time
from pathlib import Path

import jwt
import pytest

from hubbub.config import load_config
from hubbub.core.commands import Target
from hubbub.policy import Policy
from hubbub.protocol.messages import DataType
from hubbub.server.fastlane import FastLane
from hubbub.server.restrules import RestRules

KEY = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCDEFGH"
URL = b"/api/hubs/h/users/u/:send?api-version=2024-12-01"


def headers(exp: float, key: str = KEY) -> dict[bytes, bytes]:
    claims = {"aud": f"http://127.0.0.1:8080{URL.decode()}", "exp": int(exp)}
    token = jwt.encode(claims, key, algorithm="HS256")
    return {b"authorization": f"Bearer {token}".encode(), b"content-type": b"text/plain"}


def lane() -> FastLane:
    return FastLane(None, RestRules((KEY,), 75.0))  # type: ignore[arg-type]  # admit only


def test_a_send_admitted_again_is_the_same_send() -> None:
    the_lane, sent = lane(), headers(time.time() + 600)
    first = the_lane.admit(URL, sent)
    assert first == ("h", Target.USER, "u", URL.decode().partition("?")[0], DataType.TEXT)
    assert the_lane.admit(URL, dict(sent)) == first


def test_a_kept_verdict_ends_with_its_token(monkeypatch: pytest.MonkeyPatch) -> None:
    the_lane, now = lane(), time.time()
    sent = headers(now + 60)
    assert the_lane.admit(URL, sent) is not None
    monkeypatch.setattr(time, "time", lambda: now + 60 + 31)  # past exp and the skew
    assert the_lane.admit(URL, sent) is None  # aiohttp answers it: 401


def test_another_token_for_a_kept_url_is_judged_on_its_own() -> None:
    the_lane, later = lane(), time.time() + 600
    assert the_lane.admit(URL, headers(later)) is not None
    assert the_lane.admit(URL, headers(later, "k" * 44)) is None
    other_type = {**headers(later), b"content-type": b"image/png"}
    assert the_lane.admit(URL, other_type) is None


def test_kept_verdicts_are_dropped_when_the_keys_change() -> None:
    rules = RestRules((KEY,), 75.0)
    the_lane = FastLane(None, rules)  # type: ignore[arg-type]
    sent = headers(time.time() + 600)
    assert the_lane.admit(URL, sent) is not None
    rules.access_keys = ("k" * 44,)
    assert the_lane.admit(URL, sent) is None


def test_a_kept_verdict_still_answers_to_the_network_rules_and_the_rate(tmp_path: Path) -> None:
    config = tmp_path / "hubbub.toml"
    config.write_text(
        '[network]\ndefault_action = "deny"\n'
        '[[network.rules]]\naction = "allow"\naddresses = ["10.0.0.0/8"]\n'
        "[limits]\nrest_requests_per_second = 1\n"
    )
    rules = RestRules((KEY,), 75.0, Policy(load_config(str(config), env={})))
    the_lane = FastLane(None, rules)  # type: ignore[arg-type]
    sent = headers(time.time() + 600)
    assert the_lane.admit(URL, sent, "10.1.1.1") is not None  # judged, and kept
    assert the_lane.admit(URL, sent, "192.0.2.1") is None  # another address: 403 by aiohttp
    assert the_lane.admit(URL, sent, "10.1.1.1") is None  # over the hub's rate: 429
