"""The ``hubbub`` command: ``serve``, ``token`` and ``check-config``.

This module parses the command line and the configuration; ``serve`` runs the node that
:mod:`hubbub.server.app` assembles. Every failure is one line on stderr and exit code 2, never
a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Coroutine, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, NoReturn

from hubbub import __version__
from hubbub.config import Config, load_config
from hubbub.core.names import validate_group, validate_hub
from hubbub.errors import BadRequestError, ConfigError
from hubbub.limits import MAX_INT32
from hubbub.protocol.tokens import mint_client_token

if TYPE_CHECKING:
    from hubbub.server.app import Listening

__all__ = ["main"]

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"hubbub: error: {message} (see '{self.prog} --help')\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="hubbub",
        description=(
            "A self-hosted service that speaks the Azure Web PubSub protocols: "
            "the official SDKs work against it unmodified."
        ),
        epilog=(
            "Start a node with 'hubbub serve'; 'hubbub COMMAND --help' describes a command. "
            "Flags override HUBBUB_* environment variables, which override the TOML file "
            "given with --config."
        ),
    )
    parser.add_argument("--version", action="version", version=f"hubbub {__version__}")
    sub = parser.add_subparsers(
        dest="command", required=True, parser_class=_Parser, title="commands", metavar="COMMAND"
    )
    config_help = "TOML configuration file (env HUBBUB_CONFIG)"
    keys_help = (
        "access key, at least 32 bytes; give twice for primary and secondary "
        "(env HUBBUB_ACCESS_KEY, comma-separated)"
    )

    redis_help = (
        "Redis URL of the cluster (redis://host:port/db): nodes on one Redis are one "
        "service (env HUBBUB_REDIS_URL; default none, one in-memory node)"
    )
    serve = sub.add_parser(
        "serve",
        help="start a node and print its connection string",
        description=(
            "Start a node: the client endpoint (ws://HOST:PORT/client/hubs/HUB, wss:// with "
            "TLS) and the REST API on one port, with an in-memory engine, or as one node of a "
            "cluster with --redis-url. It prints the connection string for the server SDKs. "
            "Stop it with Ctrl-C or SIGTERM; SIGHUP (or changing the --config file) reloads "
            "the configuration and the certificate without dropping connections."
        ),
    )
    serve.add_argument("--config", metavar="FILE", help=config_help)
    serve.add_argument(
        "--host",
        help=(
            "address to listen on, 0.0.0.0 for every interface (env HUBBUB_HOST; default 127.0.0.1)"
        ),
    )
    serve.add_argument(
        "--port",
        type=int,
        help="port to listen on, 0 for any free one (env HUBBUB_PORT; default 8080)",
    )
    serve.add_argument(
        "--access-key",
        action="append",
        dest="access_keys",
        metavar="KEY",
        help=keys_help + "; default: one generated for this run",
    )
    _tls_arguments(serve)
    serve.add_argument(
        "--dev-tls",
        action="store_true",
        help=(
            "serve https/wss with a certificate from a local development CA, made on first use "
            "and kept under $XDG_STATE_HOME/hubbub/dev-tls; prints how to trust the CA"
        ),
    )
    serve.add_argument("--redis-url", metavar="URL", help=redis_help)
    serve.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="least severe messages to log (default info)",
    )

    token = sub.add_parser(
        "token",
        help="print a client access URL signed with the access key, as the portal does",
        description=(
            "Print a client access URL (ws://HOST:PORT/client/hubs/HUB?access_token=...) "
            "signed with the node's primary access key, as the Azure portal's generator does. "
            "It does not contact the node: give the same key, address and configuration as "
            "'hubbub serve' has."
        ),
    )
    token.add_argument("--config", metavar="FILE", help=config_help)
    token.add_argument(
        "--host",
        help=(
            "host of the node the URL points to (env HUBBUB_HOST; default 127.0.0.1); "
            "a configured public endpoint (HUBBUB_PUBLIC_ENDPOINT, server.public_endpoint) "
            "is used instead when set"
        ),
    )
    token.add_argument(
        "--port",
        type=int,
        help="port of the node the URL points to (env HUBBUB_PORT; default 8080)",
    )
    token.add_argument(
        "--access-key",
        action="append",
        dest="access_keys",
        metavar="KEY",
        help="the node's access key; the first one given signs the token (env HUBBUB_ACCESS_KEY)",
    )
    _tls_arguments(token)
    token.add_argument("--hub", required=True, help="hub the client connects to (case-insensitive)")
    token.add_argument("--user", help="user id of the client (the token's sub claim); default none")
    token.add_argument(
        "--role",
        action="append",
        default=[],
        help=(
            "permission to grant, e.g. webpubsub.sendToGroup, webpubsub.joinLeaveGroup or "
            "webpubsub.sendToGroup.GROUP; repeatable"
        ),
    )
    token.add_argument(
        "--group",
        action="append",
        default=[],
        help="group the client joins on connecting; repeatable",
    )
    token.add_argument(
        "--minutes", type=int, default=60, help="minutes until the token expires (default 60)"
    )

    check = sub.add_parser(
        "check-config",
        help="validate the configuration, say what it changes, and exit",
        description=(
            "Validate the configuration (the file, the HUBBUB_* variables and these flags) "
            "and exit: 0 when it is valid, else 2 with one line naming the problem. With "
            "--against RUNNING.toml it then lists what the configuration changes from that "
            "file, one line per setting: what a reload of a node running with RUNNING.toml "
            "would do ('(needs a restart)' marks what a reload cannot change)."
        ),
    )
    check.add_argument("--config", metavar="FILE", help=config_help)
    check.add_argument("--host", help="address to listen on (env HUBBUB_HOST)")
    check.add_argument("--port", type=int, help="port to listen on (env HUBBUB_PORT)")
    check.add_argument(
        "--access-key", action="append", dest="access_keys", metavar="KEY", help=keys_help
    )
    _tls_arguments(check)
    check.add_argument(
        "--against",
        metavar="FILE",
        help=(
            "the configuration a node runs with: list what changes from it to --config "
            "(both read with the same variables and flags)"
        ),
    )
    check.add_argument("--redis-url", metavar="URL", help=redis_help)
    return parser


def _tls_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tls-cert-file",
        metavar="FILE",
        help="PEM certificate (chain): with --tls-key-file the port serves https and wss "
        "(env HUBBUB_TLS_CERT_FILE)",
    )
    parser.add_argument(
        "--tls-key-file", metavar="FILE", help="PEM private key (env HUBBUB_TLS_KEY_FILE)"
    )
    parser.add_argument(
        "--tls-client-auth",
        choices=["off", "optional", "required"],
        help="client certificates (mTLS): off (default), optional or required "
        "(env HUBBUB_TLS_CLIENT_AUTH)",
    )
    parser.add_argument(
        "--tls-client-ca-file",
        metavar="FILE",
        help="CA bundle client certificates are verified against (env HUBBUB_TLS_CLIENT_CA_FILE)",
    )
    parser.add_argument(
        "--upstream-ca-file",
        metavar="FILE",
        help="CA bundle for https event handlers, instead of the system's "
        "(env HUBBUB_UPSTREAM_CA_FILE)",
    )


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The parser of each command."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no commands")


_TLS_FLAGS = (
    "tls_cert_file",
    "tls_key_file",
    "tls_client_auth",
    "tls_client_ca_file",
    "upstream_ca_file",
)


def _overrides(args: argparse.Namespace) -> dict[str, object]:
    """The settings given as flags (None: not given)."""
    overrides: dict[str, object] = {
        "host": args.host,
        "port": args.port,
        "access_keys": args.access_keys,
        "redis_url": getattr(args, "redis_url", None),  # token has no engine
    }
    for name in _TLS_FLAGS:
        overrides[name] = getattr(args, name, None)
    return overrides


def _config(args: argparse.Namespace, path: str | None = None) -> Config:
    return load_config(path or args.config, overrides=_overrides(args))


def _dev_tls(args: argparse.Namespace) -> str | None:
    """Point the TLS flags at the development certificate (made if needed); returns how to
    trust its CA, or None without ``--dev-tls``.

    Raises:
        ConfigError: a certificate is configured as well, or the files cannot be written.
    """
    if not getattr(args, "dev_tls", False):
        return None
    from hubbub.server.devtls import DEFAULT_HOSTS, default_state_dir, ensure_dev_certs, trust_hint

    if args.tls_cert_file or args.tls_key_file:
        raise ConfigError("--dev-tls: not together with --tls-cert-file/--tls-key-file")
    host = args.host or os.environ.get("HUBBUB_HOST") or "127.0.0.1"
    hosts = list(DEFAULT_HOSTS)
    if host not in hosts and host not in ("0.0.0.0", "::", ""):
        hosts.append(host.strip("[]"))
    try:
        certs = ensure_dev_certs(default_state_dir(), hosts)
    except OSError as exc:
        raise ConfigError(f"--dev-tls: cannot write the certificates: {exc}") from exc
    args.tls_cert_file, args.tls_key_file = str(certs.cert_file), str(certs.key_file)
    return trust_hint(certs.ca_file)


def _fail(message: str) -> int:
    print(f"hubbub: error: {message}", file=sys.stderr)
    return EXIT_USAGE


async def _serve(config: Config, args: argparse.Namespace) -> None:
    from hubbub.server.app import serve

    watch = args.config or os.environ.get("HUBBUB_CONFIG") or None
    await serve(config, started=_started, load=lambda: _config(args), watch=watch)


def _started(listening: Listening) -> None:
    """What ``hubbub serve`` prints once the node listens."""
    config = listening.config
    if config.key_generated:
        print(
            "No access key configured: generated one for this run "
            "(set --access-key or HUBBUB_ACCESS_KEY to fix it)."
        )
    print(f"hubbub {__version__} listening on {', '.join(listening.addresses)}")
    if listening.rest_addresses:
        print(f"REST API and metrics on {', '.join(listening.rest_addresses)}")
    print(f"Connection string: {config.connection_string}", flush=True)


def _run(main: Coroutine[None, None, None]) -> None:
    """Run on uvloop where it is installed (it is optional, e.g. on Windows)."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


def _run_serve(config: Config, args: argparse.Namespace, hint: str | None) -> int:
    from hubbub import logs

    if config.redis_url is not None and config.key_generated:
        return _fail(
            "a node of a cluster needs the cluster's access keys (--access-key, "
            "HUBBUB_ACCESS_KEY or auth.access_keys): a key generated per node would refuse "
            "the tokens of the others"
        )

    logs.install(args.log_level, secrets=config.access_keys)
    if hint is not None:
        print(hint, flush=True)
    try:
        _run(logs.reporting(_serve(config, args), config.log_summary_seconds))
    except ConfigError as exc:
        return _fail(str(exc))
    return 0


def _token(args: argparse.Namespace, config: Config) -> int:
    try:
        hub = validate_hub(args.hub)
    except BadRequestError as exc:
        return _fail(f"--hub: {exc}")
    try:
        groups = [validate_group(g) for g in args.group]
    except BadRequestError as exc:
        return _fail(f"--group: {exc}")
    if not 1 <= args.minutes <= MAX_INT32:
        return _fail(f"--minutes: expected a number from 1 to {MAX_INT32}, got {args.minutes}")
    audience = f"{config.endpoint}/client/hubs/{hub}"
    token = mint_client_token(
        config.access_keys[0],
        audience,
        user_id=args.user,
        roles=args.role,
        groups=groups,
        minutes=args.minutes,
    )
    ws = "ws" + config.endpoint[4:]
    print(f"{ws}/client/hubs/{hub}?access_token={token}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # told by the command's parser, which points to the command's help
        _subparsers(parser)[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        hint = _dev_tls(args)
        config = _config(args)
    except ConfigError as exc:
        return _fail(str(exc))
    if args.command == "serve":
        return _run_serve(config, args, hint)
    if args.command == "token":
        if config.key_generated:
            return _fail("no access key configured: give --access-key or HUBBUB_ACCESS_KEY")
        return _token(args, config)
    return _check(args, config)


def _check(args: argparse.Namespace, config: Config) -> int:
    """``check-config``: valid or not; with ``--against``, what changes from that file (the
    variables and flags apply to both)."""
    from hubbub.reload import describe, diff

    hubs = len(config.hubs)
    source = args.config or os.environ.get("HUBBUB_CONFIG") or "configuration"
    print(f"{source}: ok ({hubs} hub{'' if hubs == 1 else 's'} configured)")
    if not args.against:
        return 0
    try:
        base = _config(args, args.against)
    except ConfigError as exc:
        return _fail(f"--against: {exc}")
    if base.key_generated and not config.key_generated:
        base = replace(base, access_keys=())  # the keys show as added, not as changed
    print(f"Changes from {args.against}:")
    for line in describe(diff(base, config)):
        print(f"  {line}")
    return 0
