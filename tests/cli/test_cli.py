"""The command line and configuration: one clear line and exit code 2 for every mistake."""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import jwt
import pytest
from azure.messaging.webpubsubservice import WebPubSubServiceClient

from hubbub.cli import _parser, _subparsers, main
from hubbub.config import load_config
from hubbub.errors import ConfigError
from tests._pki import Pki

KEY = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCDEFGH"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hubbub", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "hubbub.toml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[server\nport=1", "invalid TOML"),
        ("[server]\nport = 'x'", "server.port"),
        ("[server]\nport = 70000", "server.port"),
        ("[server]\nbogus = 1", "server.bogus: unknown key"),
        ("[auth]\naccess_keys = ['short']", "at least 32 bytes"),
        ("[hubs.chat]\nkeep_alive_seconds = 0", "hubs.chat.keep_alive_seconds"),
        ("[hubs.chat]\nanonymous_connect = 'yes'", "hubs.chat.anonymous_connect"),
        (
            "[[hubs.chat.event_handlers]]\nurl_template = 'ftp://x'",
            "hubs.chat.event_handlers[0].url_template",
        ),
        (
            "[[hubs.chat.event_handlers]]\nurl_template = 'http://x'\nsystem_events = ['boom']",
            "unknown event 'boom'",
        ),
        ("[nope]\n", "nope: unknown section"),
    ],
)
def test_bad_config_file_is_one_line_exit_2(tmp_path: Path, text: str, fragment: str) -> None:
    """A bad file stops start-up with one line naming the file, the key and the problem."""
    path = write(tmp_path, text)
    result = run("serve", "--config", path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert path in lines[0] and fragment in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[server]\nmax_outbound_bytes = 0", "server.max_outbound_bytes: expected an integer"),
        ("[server]\nmax_outbound_bytes = -1", "server.max_outbound_bytes"),
        ("[server]\nmax_outbound_bytes = 65535", "from 65536 (64 KiB)"),
        ("[server]\nmax_outbound_bytes = 2_000_000_000", "server.max_outbound_bytes"),
        ("[server]\nmax_outbound_bytes = 1e6", "server.max_outbound_bytes"),
        ("[server]\nfast_lane = 1", "server.fast_lane: expected true or false, got 1"),
        ("[server]\nfast_lane = 'no'", "server.fast_lane: expected true or false"),
        ("[server]\nsession_timeout_seconds = nan", "server.session_timeout_seconds"),
        ("[server]\nupstream_timeout_seconds = inf", "server.upstream_timeout_seconds"),
        ("[server]\nhttp_keep_alive_seconds = -1", "server.http_keep_alive_seconds"),
        ("[server]\nhttp_keep_alive_seconds = 86401", "at most 86400"),
        ("[server]\nport = -1", "server.port"),
        ("[server]\nport = true", "server.port"),
        ("[server]\nhost = 1", "server.host: expected a string"),
        ("server = 1", "server: expected a table"),
        ("[server]\npublic_endpoint = 'pubsub.example.com'", "server.public_endpoint"),
        ("[server]\npublic_endpoint = 'ws://pubsub.example.com'", "expected http:// or https://"),
        ("[server]\npublic_endpoint = 'https://'", "server.public_endpoint"),
        ("[server]\npublic_endpoint = 'https://example.com/pubsub'", "no path or query"),
        ("[server]\npublic_endpoint = 'https://example.com?x=1'", "server.public_endpoint"),
        ("[server]\npublic_endpoint = 'https://example.com#x'", "server.public_endpoint"),
        ("[server]\npublic_endpoint = 'https://u:p@example.com'", "server.public_endpoint"),
        ("[server]\npublic_endpoint = 'https://example.com:99999'", "server.public_endpoint"),
        ("[server]\npublic_endpoint = 'https://exa mple.com'", "server.public_endpoint"),
        ("[server]\npublic_endpoint = 5", "server.public_endpoint: expected a URL"),
        ("[auth]\naccess_keys = []", "auth.access_keys: expected a list of one or two"),
        (
            "[auth]\naccess_keys = 'k'",
            "auth.access_keys: expected a list of one or two strings, got str",
        ),
        ("[auth]\naccess_keys = [1]", "expected a list of one or two strings, got int 1 in it"),
        (f"[auth]\naccess_keys = ['{KEY}', '{KEY}', '{KEY}']", "got 3"),
        (f"[auth]\naccess_keys = ['{KEY};x']", "may not contain ';'"),
        (f"[auth]\naccess_keys = ['{KEY} x']", "whitespace"),
        ('[hubs."bad hub"]', 'hubs."bad hub": invalid hub name'),
        ("[hubs.1chat]", "hubs.1chat: invalid hub name"),
        (f"[hubs.{'h' * 129}]", "invalid hub name"),
        ("[hubs.chat]\n[hubs.CHAT]", "hubs.CHAT: the same hub as hubs.chat"),
        ("hubs = 1", "hubs: expected a table"),
        ("[hubs]\nchat = 1", "hubs.chat: expected a table"),
        ("[hubs.chat]\nkeep_alive_seconds = 121", "hubs.chat.keep_alive_seconds"),
        ("[hubs.chat]\nkeep_alive_seconds = 2.5", "hubs.chat.keep_alive_seconds"),
        ("[hubs.chat]\nevent_handlers = 1", "hubs.chat.event_handlers: expected an array"),
        ("[hubs.chat]\nevent_handlers = [1]", "hubs.chat.event_handlers[0]: expected a table"),
        ("[[hubs.chat.event_handlers]]\nx = 1", "hubs.chat.event_handlers[0].x: unknown key"),
        ("[[hubs.chat.event_handlers]]\n", "event_handlers[0].url_template: expected an http(s)"),
        ("[[hubs.chat.event_handlers]]\nurl_template = 'http://'", "url_template"),
        ("[[hubs.chat.event_handlers]]\nurl_template = 'http://h:0x/'", "url_template"),
        (
            "[[hubs.chat.event_handlers]]\nurl_template = 'http://{hub}.example.com/'",
            "url_template: placeholders are not allowed in the host",
        ),
        (
            "[[hubs.chat.event_handlers]]\nurl_template = 'http://h'\nuser_event_pattern = 'a b,,'",
            "user_event_pattern: event name 'a b' contains whitespace",
        ),
        (
            "[[hubs.chat.event_handlers]]\nurl_template = 'http://h'\nuser_event_pattern = 'a,,b'",
            "user_event_pattern: an empty event name in 'a,,b'",
        ),
        (
            "[[hubs.chat.event_handlers]]\nurl_template = 'http://h'\nuser_event_pattern = 'a,'",
            "user_event_pattern: an empty event name",
        ),
        (
            "[[hubs.chat.event_handlers]]\nurl_template = 'http://h'\nuser_event_pattern = ' '",
            "user_event_pattern: an empty event name",
        ),
        (
            "[[hubs.chat.event_handlers]]\nurl_template = 'http://h'\n"
            "user_event_pattern = 'order.*'",
            "user_event_pattern: wildcards inside a name are not supported",
        ),
        (
            "[[hubs.chat.event_handlers]]\nurl_template = 'http://h'\nuser_event_pattern = 1",
            "user_event_pattern: expected a string",
        ),
        (
            "[[hubs.chat.event_handlers]]\nurl_template = 'http://h'\nsystem_events = 'connect'",
            "system_events: expected a list",
        ),
        (
            "[[hubs.chat.event_handlers]]\nurl_template = 'http://h'\n"
            "group_presence_events = ['joined', 'moved']",
            "group_presence_events: unknown group presence event 'moved'",
        ),
        (
            "[[hubs.chat.event_handlers]]\nurl_template = 'http://h'\n"
            "group_presence_events = 'joined'",
            "group_presence_events: expected a list",
        ),
        (
            "[[hubs.chat.event_handlers]]\nurl_template = 'http://h'\n"
            "group_presence_events = ['joined']\ngroup_presence_filters = ['room\\']",
            "group_presence_filters: Pattern ends with a lone",
        ),
        (
            "[[hubs.chat.event_handlers]]\nurl_template = 'http://h'\ngroup_presence_filters = [1]",
            "group_presence_filters: expected a list of strings",
        ),
    ],
)
def test_every_setting_is_validated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, fragment: str
) -> None:
    """Values a node would accept and then fail on are refused: one line, file and key, exit 2."""
    path = write(tmp_path, text)
    assert main(["check-config", "--config", path]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(f"hubbub: error: {path}: ") and fragment in err, err


def test_missing_config_file(tmp_path: Path) -> None:
    """A file that does not exist is named in the error."""
    result = run("check-config", "--config", str(tmp_path / "absent.toml"))
    assert result.returncode == 2
    assert "absent.toml: cannot read" in result.stderr


def test_bad_flag_is_one_line_exit_2() -> None:
    """An unknown flag is one line and exit code 2."""
    result = run("serve", "--bogus")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "--bogus" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["serve", "--bogus"], "unrecognized arguments: --bogus (see 'hubbub serve --help')"),
        (["token"], "the following arguments are required: --hub (see 'hubbub token --help')"),
        (["check-config", "x"], "unrecognized arguments: x (see 'hubbub check-config --help')"),
        ([], "the following arguments are required: COMMAND (see 'hubbub --help')"),
    ],
)
def test_usage_error_points_to_the_command_help(args: list[str], message: str) -> None:
    """A usage mistake points to the help of the command it was made in."""
    result = run(*args)
    assert result.returncode == 2
    assert result.stderr == f"hubbub: error: {message}\n"


def test_port_in_use_is_one_line_exit_2() -> None:
    """A port in use stops start-up with one clear line."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = run("serve", "--port", str(port), "--access-key", KEY)
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert result.stderr.count("\n") == 1


def test_check_config_ok(tmp_path: Path) -> None:
    """check-config accepts the documented example shape."""
    path = write(
        tmp_path,
        f"""
[server]
host = "127.0.0.1"
port = 8080
[auth]
access_keys = ["{KEY}", "{KEY[::-1]}"]
[hubs.Chat]
anonymous_connect = false
keep_alive_seconds = 20
[[hubs.Chat.event_handlers]]
url_template = "http://127.0.0.1:8081/eventhandler/{{event}}"
user_event_pattern = "*"
system_events = ["connect", "connected", "disconnected"]
group_presence_events = ["joined", "left"]
group_presence_filters = ["room-*"]
""",
    )
    result = run("check-config", "--config", path)
    assert result.returncode == 0, result.stderr
    config = load_config(path, env={})
    handler = config.hub("chat").event_handlers[0]
    assert handler.user_event_pattern == "*"
    assert handler.group_presence.wants("joined", "room-1")
    assert not handler.group_presence.wants("left", "lobby")
    assert config.hub("other").anonymous_connect is False


def test_precedence_flags_over_env_over_file(tmp_path: Path) -> None:
    """Flags override HUBBUB_* variables, which override the file."""
    path = write(tmp_path, "[server]\nport = 1111\nhost = '127.0.0.2'")
    env = {"HUBBUB_PORT": "2222", "HUBBUB_ACCESS_KEY": KEY}
    config = load_config(path, env=env)
    assert (config.host, config.port, config.access_keys) == ("127.0.0.2", 2222, (KEY,))
    config = load_config(path, env=env, overrides={"port": 3333})
    assert config.port == 3333


def test_fast_lane_setting_file_and_variable(tmp_path: Path) -> None:
    """``server.fast_lane`` in the file, ``HUBBUB_FAST_LANE`` over it; on by default."""
    assert load_config(None, env={}).fast_lane
    path = write(tmp_path, "[server]\nfast_lane = false")
    assert not load_config(path, env={}).fast_lane
    assert load_config(path, env={"HUBBUB_FAST_LANE": "TRUE"}).fast_lane
    assert not load_config(None, env={"HUBBUB_FAST_LANE": "0"}).fast_lane


def test_generated_key_when_none_configured() -> None:
    """With no key anywhere, one is generated and marked as such."""
    config = load_config(None, env={})
    assert config.key_generated and len(config.access_keys[0]) >= 32
    assert config.connection_string.startswith("Endpoint=http://127.0.0.1:8080;AccessKey=")


def test_bad_env_port() -> None:
    """A bad variable is named in the error."""
    with pytest.raises(ConfigError, match="HUBBUB_PORT"):
        load_config(None, env={"HUBBUB_PORT": "eighty"})


def test_token_prints_client_url() -> None:
    """``hubbub token`` prints a client URL whose token carries the claims asked for."""
    result = run(
        "token",
        "--access-key",
        KEY,
        "--hub",
        "Chat",
        "--user",
        "alice",
        "--role",
        "webpubsub.sendToGroup",
        "--group",
        "g1",
        "--minutes",
        "5",
    )
    assert result.returncode == 0, result.stderr
    url = result.stdout.strip()
    assert url.startswith("ws://127.0.0.1:8080/client/hubs/chat?access_token=")
    claims = jwt.decode(
        url.split("access_token=")[1],
        KEY.encode(),
        algorithms=["HS256"],
        audience="http://127.0.0.1:8080/client/hubs/chat",
    )
    assert claims["sub"] == "alice"
    assert claims["role"] == ["webpubsub.sendToGroup"]
    assert claims["webpubsub.group"] == ["g1"]
    assert claims["exp"] - claims["iat"] == 300


def test_token_needs_a_key() -> None:
    """Without a configured key a token would be useless: say so."""
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("HUBBUB_")}
    result = run("token", "--hub", "chat", env=env)
    assert result.returncode == 2
    assert "no access key configured" in result.stderr


def test_serve_prints_connection_string(tmp_path: Path) -> None:
    """``hubbub serve`` on embedded defaults prints the connection string and a key notice."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "hubbub", "serve", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(3)]
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
    assert "generated" in lines[0]
    assert lines[2].startswith(f"Connection string: Endpoint=http://127.0.0.1:{port};AccessKey=")
    assert proc.returncode == 0


def test_file_not_utf8_is_one_line_exit_2(tmp_path: Path) -> None:
    """A file in another encoding is named with the offending byte, not a traceback."""
    path = tmp_path / "latin1.toml"
    path.write_bytes("[hubs.chat]\n# café\n".encode("latin-1"))
    result = run("serve", "--config", str(path))
    assert result.returncode == 2
    assert result.stderr == (
        f"hubbub: error: {path}: not UTF-8 text: byte 0xe9 (at line 2, column 6); "
        "TOML files are UTF-8\n"
    )


def test_file_that_is_a_directory(tmp_path: Path) -> None:
    """A directory given as the file is named, one line."""
    result = run("check-config", "--config", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr == f"hubbub: error: {tmp_path}: cannot read: Is a directory\n"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_unreadable_file(tmp_path: Path) -> None:
    """A file that cannot be read is named, one line."""
    path = Path(write(tmp_path, "[server]\n"))
    path.chmod(0)
    result = run("check-config", "--config", str(path))
    assert result.returncode == 2
    assert result.stderr == f"hubbub: error: {path}: cannot read: Permission denied\n"


@pytest.mark.parametrize("text", ["", "\ufeff[hubs.chat]\n"])
def test_empty_file_and_byte_order_mark_are_fine(tmp_path: Path, text: str) -> None:
    """An empty file is the defaults; a UTF-8 byte-order mark, as some editors write, is skipped."""
    path = tmp_path / "hubbub.toml"
    path.write_text(text, encoding="utf-8")
    result = run("check-config", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{path}: ok ({1 if text else 0} hub{'' if text else 's'} configured)\n"


@pytest.mark.parametrize(
    ("variable", "value", "fragment"),
    [
        ("HUBBUB_PORT", "eighty", "HUBBUB_PORT: expected a port number"),
        ("HUBBUB_PORT", "65536", "HUBBUB_PORT: expected a port number"),
        ("HUBBUB_ACCESS_KEY", "short", "HUBBUB_ACCESS_KEY: an access key must be at least 32"),
        ("HUBBUB_ACCESS_KEY", f"{KEY},{KEY},{KEY}", "HUBBUB_ACCESS_KEY: expected one or two"),
        ("HUBBUB_PUBLIC_ENDPOINT", "pubsub.example.com", "HUBBUB_PUBLIC_ENDPOINT: expected http"),
        ("HUBBUB_PUBLIC_ENDPOINT", "https://example.com/x", "HUBBUB_PUBLIC_ENDPOINT"),
        ("HUBBUB_FAST_LANE", "maybe", "HUBBUB_FAST_LANE: expected true or false, got 'maybe'"),
    ],
)
def test_bad_variable_is_named_once(variable: str, value: str, fragment: str) -> None:
    """A bad variable names itself, once: no "environment:" or doubled prefix."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUBBUB_")}
    result = run("check-config", env={**env, variable: value})
    assert result.returncode == 2
    assert result.stderr.startswith(f"hubbub: error: {fragment}"), result.stderr
    assert result.stderr.count(variable) == 1 and result.stderr.count("\n") == 1
    assert KEY not in result.stderr  # an error never echoes a key


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "70000"], "--port: expected a port number from 0 (any free port) to 65535"),
        (["--port", "-1"], "--port: expected a port number"),
        (["--access-key", "short"], "--access-key: an access key must be at least 32 bytes"),
        (["--access-key", KEY] * 3, "--access-key: expected one or two (primary, secondary)"),
    ],
)
def test_bad_flag_value_is_named_once(args: list[str], message: str) -> None:
    """A bad flag value names the flag once."""
    result = run("serve", *args)
    assert result.returncode == 2
    assert result.stderr.startswith(f"hubbub: error: {message}"), result.stderr
    assert result.stderr.count(args[0]) == 1 and result.stderr.count("\n") == 1
    assert KEY not in result.stderr


def test_empty_variables_count_as_unset() -> None:
    """``HUBBUB_PORT=`` (as a compose file with an unset substitution writes) is no setting."""
    env = dict.fromkeys(
        [
            "HUBBUB_HOST",
            "HUBBUB_PORT",
            "HUBBUB_ACCESS_KEY",
            "HUBBUB_PUBLIC_ENDPOINT",
            "HUBBUB_CONFIG",
            "HUBBUB_FAST_LANE",
        ],
        "",
    )
    config = load_config(None, env=env)
    assert (config.host, config.port, config.public_endpoint) == ("127.0.0.1", 8080, None)
    assert config.fast_lane
    assert config.key_generated


@pytest.mark.parametrize(
    ("value", "endpoint"),
    [
        ("https://pubsub.example.com", "https://pubsub.example.com"),
        ("https://pubsub.example.com/", "https://pubsub.example.com"),
        ("HTTP://Pubsub.example.com:8443", "http://Pubsub.example.com:8443"),
        ("http://[::1]:8080", "http://[::1]:8080"),
    ],
)
def test_public_endpoint_forms(tmp_path: Path, value: str, endpoint: str) -> None:
    """The accepted forms of the public endpoint, from the file and from the variable."""
    path = write(tmp_path, f"[server]\npublic_endpoint = '{value}'\n")
    assert load_config(path, env={}).endpoint == endpoint
    assert load_config(None, env={"HUBBUB_PUBLIC_ENDPOINT": value}).endpoint == endpoint


def test_token_uses_the_public_endpoint() -> None:
    """Behind a proxy the URL points to the public endpoint, wss:// for https://."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUBBUB_")}
    env["HUBBUB_PUBLIC_ENDPOINT"] = "https://pubsub.example.com"
    result = run("token", "--access-key", KEY, "--hub", "chat", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("wss://pubsub.example.com/client/hubs/chat?access_token=")


@pytest.mark.parametrize("pattern", ["", "*", "message", "a,b", "a, b", "order.created,*"])
def test_user_event_patterns_accepted(tmp_path: Path, pattern: str) -> None:
    """The forms the service documents: "*", one name, names separated by commas."""
    path = write(
        tmp_path,
        f"[[hubs.chat.event_handlers]]\nurl_template = 'http://h/{{event}}'\n"
        f"user_event_pattern = '{pattern}'\n",
    )
    assert load_config(path, env={}).hub("chat").event_handlers[0].user_event_pattern == pattern


@pytest.mark.parametrize("name", ["Chat", "a", "a_b.c,d`e[f]", "h" * 128])
def test_hub_names_accepted(tmp_path: Path, name: str) -> None:
    """Every name the service accepts as a hub can be configured; it is found in lower case."""
    path = write(tmp_path, f'[hubs."{name}"]\nanonymous_connect = true\n')
    assert load_config(path, env={}).hub(name.lower()).anonymous_connect


def test_bounds_of_numeric_settings_accepted(tmp_path: Path) -> None:
    """The documented bounds themselves are accepted."""
    path = write(
        tmp_path,
        "[server]\nport = 0\nmax_outbound_bytes = 65536\nsession_timeout_seconds = 0.5\n"
        "upstream_timeout_seconds = 86400\nhttp_keep_alive_seconds = 1\n"
        "[hubs.a]\nkeep_alive_seconds = 1\n[hubs.b]\nkeep_alive_seconds = 120\n",
    )
    config = load_config(path, env={})
    assert (config.port, config.max_outbound_bytes) == (0, 65536)
    path = write(tmp_path, "[server]\nmax_outbound_bytes = 1073741824\nport = 65535\n")
    assert load_config(path, env={}).max_outbound_bytes == 1073741824


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    return _subparsers(_parser())


@pytest.mark.parametrize("command", ["serve", "token", "check-config"])
def test_every_option_is_described(command: str) -> None:
    """Each command has a description and each of its options a help text."""
    sub = _subcommands()[command]
    assert sub.description
    for action in sub._actions:
        assert action.help, f"{command} {action.option_strings} has no help"


def test_token_address_options_name_the_endpoint() -> None:
    """For ``token``, --host and --port name where the URL points, not where to listen."""
    token = _subcommands()["token"]
    for action in token._actions:
        if action.dest in ("host", "port"):
            assert action.help and "URL points to" in action.help
            assert "listen" not in action.help


def test_help_of_every_command() -> None:
    """``--help`` of each command answers, exit 0, naming the command's options."""
    for command, options in {
        "serve": ["--log-level", "--access-key KEY"],
        "token": ["--hub HUB", "--role ROLE", "URL points to"],
        "check-config": ["--config FILE"],
    }.items():
        result = run(command, "--help")
        assert result.returncode == 0, result.stderr
        for option in options:
            assert option in result.stdout, (command, option)
    result = run("--help")
    assert result.returncode == 0
    assert "hubbub serve" in result.stdout and "check-config" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--hub", "bad hub"], "--hub: invalid hub name 'bad hub'"),
        (["--hub", "chat", "--group", ""], "--group: invalid group name ''"),
        (["--hub", "chat", "--minutes", "0"], "--minutes: expected a number from 1 to 2147483647"),
        (["--hub", "chat", "--minutes", str(2**31)], "--minutes: expected a number from 1"),
    ],
)
def test_bad_token_option_is_named(args: list[str], message: str) -> None:
    """``token``'s own options name themselves in their errors."""
    result = run("token", "--access-key", KEY, *args)
    assert result.returncode == 2
    assert result.stderr.startswith(f"hubbub: error: {message}"), result.stderr


def test_serve_on_port_0_prints_the_bound_port() -> None:
    """``--port 0`` listens on a free port and prints that one, in the connection string too."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "hubbub", "serve", "--port", "0", "--access-key", KEY],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        listening = proc.stdout.readline()
        connection = proc.stdout.readline()
        match = re.fullmatch(r"hubbub \S+ listening on http://127\.0\.0\.1:(\d+)\n", listening)
        assert match, listening
        port = int(match[1])
        assert port != 0
        endpoint = f"http://127.0.0.1:{port}"
        assert (
            connection == f"Connection string: Endpoint={endpoint};AccessKey={KEY};Version=1.0;\n"
        )
        request = urllib.request.Request(f"{endpoint}/api/health", method="HEAD")
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200
        # A token the node generates points to the same port.
        service = WebPubSubServiceClient.from_connection_string(
            connection.split(": ", 1)[1].strip(), hub="chat"
        )
        url = service.get_client_access_token(user_id="u")["url"]
        assert url.startswith(f"ws://127.0.0.1:{port}/client/hubs/chat?access_token=")
        # So does one the node mints itself (REST :generateToken).
        rest = f"{endpoint}/api/hubs/chat/:generateToken?api-version=2024-12-01"
        bearer = jwt.encode({"aud": rest, "exp": int(time.time()) + 300}, KEY, "HS256")
        request = urllib.request.Request(
            rest, method="POST", headers={"Authorization": f"Bearer {bearer}"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            minted = json.load(response)["token"]
        claims = jwt.decode(minted, KEY, algorithms=["HS256"], options={"verify_aud": False})
        assert claims["aud"] == f"{endpoint}/client/hubs/chat"
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
    assert proc.returncode == 0


def test_redis_url_flag_is_validated(capsys: pytest.CaptureFixture[str]) -> None:
    """--redis-url is checked like the other settings: one line naming the flag, exit 2."""
    assert main(["check-config", "--redis-url", "redis://h:6379/0"]) == 0
    capsys.readouterr()
    assert main(["check-config", "--redis-url", "tcp://h:6379"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("hubbub: error: --redis-url: expected"), err


def test_check_config_against_the_running_file_lists_what_a_reload_changes(
    tmp_path: Path, pki: Pki
) -> None:
    """``--against`` names each change, marks what needs a restart, and never shows a key."""
    running = tmp_path / "running.toml"
    running.write_text(
        f'[auth]\naccess_keys = ["{KEY}", "{KEY[::-1]}"]\n[hubs.chat]\nanonymous_connect = false\n'
    )
    new = tmp_path / "new.toml"
    new.write_text(
        f'[server]\nport = 9090\n[auth]\naccess_keys = ["{KEY[::-1]}"]\n'
        "[hubs.chat]\nanonymous_connect = true\n"
        "[[hubs.chat.event_handlers]]\n"
        'url_template = "https://handler.example/{event}?code=secret"\n'
    )
    result = run("check-config", "--config", str(new), "--against", str(running))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"{new}: ok (1 hub configured)",
        f"Changes from {running}:",
        "  server.port: 8080 -> 9090 (needs a restart)",
        "  auth.access_keys: the primary key is the former secondary",
        "  auth.access_keys: the secondary key was removed",
        "  hubs.chat.anonymous_connect: False -> True",
        "  hubs.chat.event_handlers: none -> https://handler.example/{event}?...",
    ]
    assert KEY not in result.stdout and "secret" not in result.stdout
    same = run("check-config", "--config", str(running), "--against", str(running))
    assert same.stdout.splitlines()[1:] == [f"Changes from {running}:", "  no changes"]
    bad = run("check-config", "--config", str(new), "--against", str(tmp_path / "absent.toml"))
    assert bad.returncode == 2 and bad.stderr.startswith("hubbub: error: --against: ")


def test_tls_flags_make_the_token_url_wss(pki: Pki) -> None:
    """The TLS flags are settings like the others: with a certificate, client URLs are wss."""
    result = run(
        "token",
        "--hub",
        "chat",
        "--access-key",
        KEY,
        "--tls-cert-file",
        str(pki.server.cert_file),
        "--tls-key-file",
        str(pki.server.key_file),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("wss://127.0.0.1:8080/client/hubs/chat?access_token=")
    missing = run("check-config", "--tls-cert-file", str(pki.server.cert_file))
    assert missing.returncode == 2
    assert "tls_cert_file and tls_key_file are given together" in missing.stderr


def test_a_cluster_node_needs_access_keys() -> None:
    """With a Redis URL and no key, serve stops with one line instead of generating one."""
    result = run("serve", "--port", "0", "--redis-url", "redis://127.0.0.1:1/0")
    assert result.returncode == 2
    assert result.stderr.startswith("hubbub: error: a node of a cluster needs the cluster's")
    assert result.stderr.count("\n") == 1
