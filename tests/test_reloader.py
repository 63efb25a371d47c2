"""The configuration re-read on SIGHUP and when its file changes; a bad file changes nothing."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path

import pytest

from hubbub.config import Config, load_config
from hubbub.reload import Change
from hubbub.reloader import ConfigReloader

KEY_A, KEY_B = "A" * 43, "B" * 43


def write(path: Path, key: str, anonymous: bool = False) -> None:
    flag = str(anonymous).lower()
    path.write_text(f'[auth]\naccess_keys = ["{key}"]\n[hubs.chat]\nanonymous_connect = {flag}\n')


def reloader(
    path: Path, poll: float = 0.05
) -> tuple[ConfigReloader, list[tuple[Config, list[Change]]]]:
    applied: list[tuple[Config, list[Change]]] = []
    current = load_config(str(path), env={})
    return (
        ConfigReloader(
            current,
            lambda: load_config(str(path), env={}),
            lambda config, changes: applied.append((config, changes)),
            path=str(path),
            poll_seconds=poll,
        ),
        applied,
    )


def test_a_bad_file_keeps_the_running_configuration(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The reason is logged in one line; nothing is applied."""
    path = tmp_path / "hubbub.toml"
    write(path, KEY_A)
    watcher, applied = reloader(path)
    path.write_text('[auth]\naccess_keys = ["short"]\n')
    with caplog.at_level(logging.WARNING, "hubbub.config"):
        assert not watcher.reload()
    assert applied == []
    assert watcher.current.access_keys == (KEY_A,)
    assert "keeping the running one" in caplog.text and "at least 32 bytes" in caplog.text
    assert "short" not in caplog.text


def test_a_good_file_is_applied_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A rotated key and a hub setting reach apply; the log says what changed, not the key."""
    path = tmp_path / "hubbub.toml"
    write(path, KEY_A)
    watcher, applied = reloader(path)
    write(path, KEY_B, anonymous=True)
    with caplog.at_level(logging.INFO, "hubbub.config"):
        assert watcher.reload()
    ((config, changes),) = applied
    assert config.access_keys == (KEY_B,) and config.hub("chat").anonymous_connect
    assert [c.key for c in changes] == ["auth.access_keys", "hubs.chat.anonymous_connect"]
    assert "the primary key changed" in caplog.text and KEY_B not in caplog.text
    assert not watcher.reload()  # nothing new


async def test_the_file_changing_is_noticed(tmp_path: Path) -> None:
    """Writing the file is enough; no signal needed."""
    path = tmp_path / "hubbub.toml"
    write(path, KEY_A)
    watcher, applied = reloader(path)
    watcher.start()
    try:
        write(path, KEY_B)
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
        for _ in range(100):
            if applied:
                break
            await asyncio.sleep(0.02)
        assert applied and applied[0][0].access_keys == (KEY_B,)
    finally:
        await watcher.stop()


async def test_sighup_reloads(tmp_path: Path) -> None:
    """kill -HUP reloads at once."""
    path = tmp_path / "hubbub.toml"
    write(path, KEY_A)
    watcher, applied = reloader(path, poll=3600)
    watcher.start()
    try:
        write(path, KEY_B)
        os.kill(os.getpid(), signal.SIGHUP)
        for _ in range(100):
            if applied:
                break
            await asyncio.sleep(0.02)
        assert applied and applied[0][0].access_keys == (KEY_B,)
    finally:
        await watcher.stop()


async def test_the_certificate_is_looked_at_on_each_poll_and_reloaded_on_sighup(
    tmp_path: Path,
) -> None:
    """The certificate hook: False on every poll (load if changed), True on SIGHUP (load
    anyway), even when the configuration itself did not change."""
    path = tmp_path / "hubbub.toml"
    write(path, KEY_A)
    calls: list[bool] = []
    current = load_config(str(path), env={})
    watcher = ConfigReloader(
        current,
        lambda: load_config(str(path), env={}),
        lambda config, changes: None,
        poll_seconds=0.02,
        certificates=calls.append,
    )
    watcher.start()
    try:
        for _ in range(100):
            if False in calls:
                break
            await asyncio.sleep(0.02)
        assert False in calls
        os.kill(os.getpid(), signal.SIGHUP)
        for _ in range(100):
            if True in calls:
                break
            await asyncio.sleep(0.02)
        assert True in calls
    finally:
        await watcher.stop()
