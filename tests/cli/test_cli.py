"""The command line and configuration: one clear line and exit code 2 for every mistake."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import jwt
import pytest

from hubbub.config import load_config
from hubbub.errors import ConfigError

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
""",
    )
    result = run("check-config", "--config", path)
    assert result.returncode == 0, result.stderr
    config = load_config(path, env={})
    assert config.hub("chat").event_handlers[0].user_event_pattern == "*"
    assert config.hub("other").anonymous_connect is False


def test_precedence_flags_over_env_over_file(tmp_path: Path) -> None:
    """Flags override HUBBUB_* variables, which override the file."""
    path = write(tmp_path, "[server]\nport = 1111\nhost = '127.0.0.2'")
    env = {"HUBBUB_PORT": "2222", "HUBBUB_ACCESS_KEY": KEY}
    config = load_config(path, env=env)
    assert (config.host, config.port, config.access_keys) == ("127.0.0.2", 2222, (KEY,))
    config = load_config(path, env=env, overrides={"port": 3333})
    assert config.port == 3333


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
        proc.wait(timeout=10)
    assert "generated" in lines[0]
    assert lines[2].startswith(f"Connection string: Endpoint=http://127.0.0.1:{port};AccessKey=")
    assert proc.returncode == 0
