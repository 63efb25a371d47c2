"""The ``hubbub`` command: ``serve``, ``token`` and ``check-config``.

Every failure is one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Coroutine, Sequence
from typing import NoReturn

from hubbub import __version__
from hubbub.config import Config, load_config
from hubbub.core.names import validate_group, validate_hub
from hubbub.errors import BadRequestError, ConfigError
from hubbub.protocol.tokens import mint_client_token

__all__ = ["main"]

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"hubbub: error: {message} (see 'hubbub --help')\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="hubbub", description="A self-hosted Azure Web PubSub service.")
    parser.add_argument("--version", action="version", version=f"hubbub {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", help="TOML configuration file (env HUBBUB_CONFIG)")
        p.add_argument("--host", help="address to listen on (env HUBBUB_HOST)")
        p.add_argument("--port", type=int, help="port to listen on (env HUBBUB_PORT)")
        p.add_argument(
            "--access-key",
            action="append",
            dest="access_keys",
            help="access key; give twice for primary and secondary (env HUBBUB_ACCESS_KEY)",
        )

    serve = sub.add_parser("serve", help="start a node")
    common(serve)
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    token = sub.add_parser("token", help="print a client access URL, as the portal does")
    common(token)
    token.add_argument("--hub", required=True)
    token.add_argument("--user", help="user id (sub claim)")
    token.add_argument("--role", action="append", default=[], help="role; repeatable")
    token.add_argument("--group", action="append", default=[], help="initial group; repeatable")
    token.add_argument("--minutes", type=int, default=60, help="lifetime (default 60)")
    check = sub.add_parser("check-config", help="validate the configuration and exit")
    common(check)
    return parser


def _config(args: argparse.Namespace) -> Config:
    return load_config(
        args.config,
        overrides={"host": args.host, "port": args.port, "access_keys": args.access_keys},
    )


def _fail(message: str) -> int:
    print(f"hubbub: error: {message}", file=sys.stderr)
    return EXIT_USAGE


async def _serve(config: Config) -> None:
    from hubbub.server.app import FAST_LANE, build_app
    from hubbub.server.limits import Runner
    from hubbub.server.port import listen

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    app = build_app(config)
    runner = Runner(
        app,
        access_log=None,
        handle_signals=False,
        keepalive_timeout=config.http_keep_alive_seconds,
    )
    await runner.setup()
    try:
        listener = await listen(runner, config.host, config.port, app[FAST_LANE])
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(
            f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}"
        ) from exc
    if config.key_generated:
        print(
            "No access key configured: generated one for this run "
            "(set --access-key or HUBBUB_ACCESS_KEY to fix it)."
        )
    print(f"hubbub {__version__} listening on http://{config.host}:{config.port}")
    print(f"Connection string: {config.connection_string}", flush=True)
    await stop.wait()
    listener.close()
    await runner.cleanup()


def _run(main: Coroutine[None, None, None]) -> None:
    """Run on uvloop where it is installed (it is optional, e.g. on Windows)."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


def _run_serve(config: Config, log_level: str) -> int:
    from hubbub import logs

    logs.install(log_level, secrets=config.access_keys)
    try:
        _run(logs.reporting(_serve(config), config.log_summary_seconds))
    except ConfigError as exc:
        return _fail(str(exc))
    return 0


def _token(args: argparse.Namespace, config: Config) -> int:
    try:
        hub = validate_hub(args.hub)
        groups = [validate_group(g) for g in args.group]
    except BadRequestError as exc:
        return _fail(str(exc))
    if args.minutes < 1:
        return _fail("--minutes must be at least 1")
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
    args = _parser().parse_args(argv)
    try:
        config = _config(args)
    except ConfigError as exc:
        return _fail(str(exc))
    if args.command == "serve":
        return _run_serve(config, args.log_level)
    if args.command == "token":
        if config.key_generated:
            return _fail("no access key configured: give --access-key or HUBBUB_ACCESS_KEY")
        return _token(args, config)
    print(f"{args.config or 'configuration'}: ok ({len(config.hubs)} hubs configured)")
    return 0
