"""Re-reading the configuration on SIGHUP and when its file changes.

A new file that does not load keeps the running configuration and logs why, in one line. One
that loads is logged change by change (:mod:`hubbub.reload`) and handed to ``apply`` as
:func:`~hubbub.reload.live_config`: the settings that need a restart stay as they run.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable

from hubbub.config import Config
from hubbub.errors import ConfigError
from hubbub.reload import Change, diff, live_config

__all__ = ["ConfigReloader"]

log = logging.getLogger("hubbub.config")


class ConfigReloader:
    """Loads the configuration again and applies what may change live.

    Args:
        current: the running configuration.
        load: builds a configuration from the same sources as at start (file, env, flags).
        apply: takes the new running configuration and the changes; called on the loop.
        path: the file to watch for changes, if any.
        poll_seconds: how often its modification time is looked at.
    """

    def __init__(
        self,
        current: Config,
        load: Callable[[], Config],
        apply: Callable[[Config, list[Change]], None],
        *,
        path: str | None = None,
        poll_seconds: float = 2.0,
    ) -> None:
        self.current = current
        self._load, self._apply = load, apply
        self._path, self._poll = path, poll_seconds
        self._stamp = self._stat()
        self._task: asyncio.Task[None] | None = None

    def reload(self) -> bool:
        """Load and apply now; False when the new configuration is refused or changes nothing."""
        try:
            new = self._load()
        except ConfigError as exc:
            log.warning("configuration not reloaded, keeping the running one: %s", exc)
            return False
        changes = diff(self.current, new)
        if not changes:
            log.info("configuration reloaded: no changes")
            return False
        for change in changes:
            log.info("configuration reloaded: %s", change)
        self.current = live_config(self.current, new)
        self._apply(self.current, changes)
        return True

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Reload on SIGHUP (where there is one) and poll the file."""
        loop = loop or asyncio.get_running_loop()
        if hasattr(signal, "SIGHUP"):
            loop.add_signal_handler(signal.SIGHUP, self.reload)
        if self._path is not None:
            self._task = loop.create_task(self._watch())

    async def stop(self) -> None:
        if hasattr(signal, "SIGHUP"):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def _stat(self) -> tuple[int, int] | None:
        if self._path is None:
            return None
        try:
            st = os.stat(self._path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._poll)
            stamp = self._stat()
            if stamp is not None and stamp != self._stamp:
                self._stamp = stamp
                self.reload()
