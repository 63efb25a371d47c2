"""Re-reading the configuration on SIGHUP and when its file changes.

A new file that does not load keeps the running configuration and logs why, in one line. One
that loads is logged change by change (:mod:`hubbub.reload`) and handed to ``apply`` as
:func:`~hubbub.reload.live_config`: the settings that need a restart stay as they run.

The TLS certificate has a watch of its own (``certificates``): its files are looked at on the
same poll, and loaded again on every SIGHUP even when the configuration did not change (a
renewal writes new files under the same names, then runs ``systemctl reload``).
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
        certificates: called on every poll with False (load the certificate if its files
            changed) and on SIGHUP with True (load it again anyway).
    """

    def __init__(
        self,
        current: Config,
        load: Callable[[], Config],
        apply: Callable[[Config, list[Change]], None],
        *,
        path: str | None = None,
        poll_seconds: float = 2.0,
        certificates: Callable[[bool], object] | None = None,
    ) -> None:
        self.current = current
        self._load, self._apply = load, apply
        self._path, self._poll = path, poll_seconds
        self._certificates = certificates
        self._signals = False
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

    def hangup(self) -> None:
        """What SIGHUP does: reload the configuration, and the certificate in any case."""
        self.reload()
        if self._certificates is not None:
            self._certificates(True)

    def start(self, loop: asyncio.AbstractEventLoop | None = None, *, signals: bool = True) -> None:
        """Reload on SIGHUP (where there is one, unless ``signals`` is False) and poll the
        file and the certificate."""
        loop = loop or asyncio.get_running_loop()
        if signals and hasattr(signal, "SIGHUP"):
            loop.add_signal_handler(signal.SIGHUP, self.hangup)
            self._signals = True
        if self._path is not None or self._certificates is not None:
            self._task = loop.create_task(self._watch())

    async def stop(self) -> None:
        if self._signals:
            self._signals = False
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
            try:
                stamp = self._stat()
                if stamp is not None and stamp != self._stamp:
                    self._stamp = stamp
                    self.reload()
                if self._certificates is not None:
                    self._certificates(False)
            except Exception:  # the watch outlives whatever one look at the files meets
                log.exception("configuration watch failed; trying again at the next poll")
