"""A running node taking a reloaded configuration, and its TLS certificate renewed, live.

:class:`LiveNode` hands a configuration that :class:`~hubbub.reloader.ConfigReloader` loaded
(the settings that need a restart already kept as they run) to each part that reads it: the
node (client tokens, hub settings, anonymous connect, keep-alive of new connections, session
timeouts), the service (``:generateToken`` signs with the new primary key), the REST rules and
the fast lane (REST tokens), the policy (network rules, limits and Entra ID, for the requests
and connections that come next; open connections keep their places), the event handlers'
client (handlers, the signatures' keys, the CA bundle) and the upgraded sockets (the bound of
unsent bytes, for new connections). Open
connections stay as they are; what they do next follows the new settings.

The TLS context is the listener's, shared by every new handshake: a new certificate and key
are loaded into it (:func:`~hubbub.server.tls.reload_cert_chain`) when their files change,
on SIGHUP, or when the configuration names other files; the client-certificate mode is set on
it. Connections already open keep the certificate they were made with.

Other parts that take a reloaded configuration register with :meth:`LiveNode.on_update`.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING

from hubbub.config import Config
from hubbub.reload import Change
from hubbub.server.tls import CertFiles, reload_cert_chain, verify_mode

if TYPE_CHECKING:
    from hubbub.server.app import Parts

__all__ = ["LiveNode"]

log = logging.getLogger("hubbub.config")


class LiveNode:
    """Applies reloaded configurations and renewed certificates to one running node.

    Args:
        parts: the node's parts (:func:`hubbub.server.app.build`).
        tls: the listener's context, or None when the port serves plain http.
    """

    def __init__(self, parts: Parts, tls: ssl.SSLContext | None) -> None:
        self._parts = parts
        self._tls = tls
        self._config = parts.config
        self._files: CertFiles | None = None
        if tls is not None and parts.config.tls_cert_file and parts.config.tls_key_file:
            self._files = CertFiles(parts.config.tls_cert_file, parts.config.tls_key_file).stat()
        self._listeners: list[Callable[[Config], None]] = []

    @property
    def config(self) -> Config:
        """The configuration the node runs with now."""
        return self._config

    def on_update(self, listener: Callable[[Config], None]) -> None:
        """Call ``listener`` with each configuration applied from now on."""
        self._listeners.append(listener)

    def apply(self, config: Config, changes: list[Change] | None = None) -> None:
        """Switch the running parts to ``config`` (see the module's description)."""
        parts = self._parts
        self._config = config
        parts.node.update(config)
        parts.service.update(config)
        parts.rules.access_keys = config.access_keys
        if parts.rules.policy is not None:
            parts.rules.policy.update(config)  # network rules, limits, Entra ID
        parts.upstream.update(config)
        parts.upstream.set_timeout(config.upstream_timeout_seconds)
        parts.sockets.max_outbound_bytes = config.max_outbound_bytes
        if self._tls is not None:
            self._apply_tls(config)
        for listener in self._listeners:
            listener(config)

    def _apply_tls(self, config: Config) -> None:
        assert self._tls is not None
        mode = verify_mode(config.tls_client_auth)
        if mode != ssl.CERT_NONE and not config.tls_client_ca_file:
            log.warning(
                "tls_client_auth %r not applied: no tls_client_ca_file was configured at start "
                "(a restart takes it)",
                config.tls_client_auth,
            )
        elif self._tls.verify_mode != mode:
            self._tls.verify_mode = mode
            log.info("client certificates now %s for new connections", config.tls_client_auth)
        if config.tls_cert_file and config.tls_key_file and self._files is not None:
            named = (config.tls_cert_file, config.tls_key_file)
            if named != (self._files.cert_file, self._files.key_file):
                self._load(CertFiles(*named).stat())

    def check_certificate(self, force: bool = False) -> bool:
        """Load the certificate again when its files changed (always when ``force``).

        Returns:
            True when a new certificate was loaded.
        """
        if self._files is None:
            return False
        newer = self._files.stat()
        if not (force or self._files.changed(newer)):
            return False
        return self._load(newer)

    def _load(self, files: CertFiles) -> bool:
        assert self._tls is not None
        try:
            reload_cert_chain(self._tls, files.cert_file, files.key_file)
        except (OSError, ssl.SSLError) as exc:
            # A renewal caught halfway (the certificate written, not yet its key) is retried
            # at the next change; the running certificate stays.
            log.warning(
                "TLS certificate %s not reloaded, keeping the running one: %s",
                files.cert_file,
                getattr(exc, "strerror", None) or exc,
            )
            self._files = files
            return False
        self._files = files
        log.info("TLS certificate %s loaded for new connections", files.cert_file)
        return True
