"""The README's commands and code, run as a newcomer runs them: what it shows is what happens.

Every command and program is read from README.md itself, so the two cannot drift apart. The
only change made to them is the port: 8080 becomes a free one.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import os
import re
import shlex
import subprocess
import sys
import time
import tomllib
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from hubbub.config import Config, load_config
from tests._pki import Pki
from tests._redis import RedisServer
from tests.conftest import free_port

README = Path(__file__).resolve().parents[2] / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
README_PORT = "8080"

QUICK_START = "Quick start with the official Python SDKs"
QUICK_START_LANES = 4
"""Nodes the quick start runs against side by side."""
QUICK_START_RUNS = 2
"""Runs of the quick start per node: a program that closes too early shows in one of a few."""


def section(title: str) -> str:
    """The text of the README section headed ``## title``."""
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def blocks(title: str) -> list[tuple[str, str]]:
    """The fenced code blocks of a section: (language, text), in order."""
    return FENCE.findall(section(title))


def block(title: str, language: str, containing: str = "") -> str:
    """The one block of ``language`` in the section that contains ``containing``."""
    found = [text for lang, text in blocks(title) if lang == language and containing in text]
    assert len(found) == 1, (
        f"README {title!r}: {len(found)} {language!r} blocks with {containing!r}"
    )
    return found[0]


def command_line(text: str, program: str) -> str:
    """The line of a shell block that runs ``program`` (after any ``&&``)."""
    found = [
        part.strip()
        for line in text.splitlines()
        for part in line.split("&&")
        if part.strip().startswith(f"{program} ") or part.strip() == program
    ]
    assert len(found) == 1, f"{len(found)} {program!r} commands in {text!r}"
    return found[0]


def hubbub(line: str, port: int) -> list[str]:
    """A README ``hubbub ...`` command, run from this checkout and pointed at ``port``."""
    args = shlex.split(line)
    assert args[0] == "hubbub" and "--port" not in args
    return [sys.executable, "-m", "hubbub", *args[1:], "--port", str(port)]


def environment() -> dict[str, str]:
    """A newcomer's environment: no HUBBUB_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUBBUB_")}
    return {**env, "PYTHONUNBUFFERED": "1"}


@contextmanager
def node(command: list[str], port: int, log: Path) -> Iterator[Path]:
    """Run ``hubbub serve`` until its health endpoint answers; yield the file of its output."""
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=environment())
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/api/health", method="HEAD"
                )
                with urllib.request.urlopen(request, timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline, "hubbub did not answer in 20 s"
                time.sleep(0.05)
        yield log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_install_and_start_prints_what_the_readme_shows(tmp_path: Path) -> None:
    """``hubbub serve`` with nothing configured prints the three lines the README shows."""
    start, printout = blocks("Install and start")[:2]
    assert start[0] == "sh" and printout[0] == ""
    port = free_port()
    with node(hubbub(command_line(start[1], "hubbub"), port), port, tmp_path / "out") as log:
        printed = log.read_text().splitlines()
    pattern = re.escape(printout[1].strip()).replace(re.escape("..."), r"\S+")
    pattern = re.sub(r"hubbub\\ [\d.]+\\ ", r"hubbub\\ \\S+\\ ", pattern)
    pattern = pattern.replace(README_PORT, str(port))
    assert re.fullmatch(pattern, "\n".join(printed[:3])), printed


def test_python_quick_start_prints_what_the_readme_shows(tmp_path: Path) -> None:
    """The quick start's program, run against the quick start's node, prints what it shows."""
    setup = block(QUICK_START, "sh", "hubbub serve")
    pip = command_line(setup, "pip")
    for package in shlex.split(pip)[2:]:
        importlib.metadata.version(package)  # the packages it installs are the ones tested
    serve = command_line(setup, "hubbub")
    program = block(QUICK_START, "python")
    assert program.count(f"127.0.0.1:{README_PORT}") == 1
    expected = block(QUICK_START, "text")

    def lane(index: int) -> list[subprocess.CompletedProcess[str]]:
        port = free_port()
        code = program.replace(f"127.0.0.1:{README_PORT}", f"127.0.0.1:{port}")
        with node(hubbub(serve, port), port, tmp_path / f"node{index}"):
            return [
                subprocess.run(
                    [sys.executable, "-c", code],
                    capture_output=True,
                    text=True,
                    timeout=60,
                    env=environment(),
                    cwd=tmp_path,
                )
                for _ in range(QUICK_START_RUNS)
            ]

    with ThreadPoolExecutor(QUICK_START_LANES) as pool:
        runs = [run for runs in pool.map(lane, range(QUICK_START_LANES)) for run in runs]
    for run in runs:
        assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr
    assert [run.stdout for run in runs] == [expected] * len(runs)


def test_token_command_gives_a_url_that_connects(tmp_path: Path) -> None:
    """``hubbub token`` as the README gives it: the URL connects as alice, with the role asked."""
    serve = command_line(block(QUICK_START, "sh", "hubbub serve"), "hubbub")
    line = command_line(block(QUICK_START, "sh", "hubbub token"), "hubbub")
    port = free_port()
    with node(hubbub(serve, port), port, tmp_path / "node"):
        result = subprocess.run(
            hubbub(line, port), capture_output=True, text=True, timeout=30, env=environment()
        )
        assert result.returncode == 0, result.stderr
        url = result.stdout.strip()
        assert url.startswith(f"ws://127.0.0.1:{port}/client/hubs/chat?access_token=")
        replies = asyncio.run(_connect_and_send(url))
    connected, sent, joined = replies
    assert (connected["event"], connected["userId"]) == ("connected", "alice")
    assert sent == {"type": "ack", "ackId": 1, "success": True}
    assert (joined["ackId"], joined["success"], joined["error"]["name"]) == (2, False, "Forbidden")


async def _connect_and_send(url: str) -> list[dict[str, Any]]:
    """Connect, send to a group (granted), join one (not granted): the three answers."""
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(url, protocols=["json.webpubsub.azure.v1"]) as ws,
    ):
        replies = [json.loads(await ws.receive_str(timeout=10))]
        for message in (
            {"type": "sendToGroup", "group": "room", "dataType": "text", "data": "x", "ackId": 1},
            {"type": "joinGroup", "group": "room", "ackId": 2},
        ):
            await ws.send_str(json.dumps(message))
            replies.append(json.loads(await ws.receive_str(timeout=10)))
        return replies


def test_configuration_example_is_valid(tmp_path: Path) -> None:
    """The example file passes ``check-config`` as the README runs it, keys filled in."""
    text = section("Configuration")
    example = block("Configuration", "toml")
    keys = [
        "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCDEFGH",
        "secondary-0123456789-abcdefghijklmnopqrs",
    ]
    filled = example.replace("<primary>", keys[0]).replace("<secondary>", keys[1])
    (line,) = re.findall(r"`(hubbub check-config [^`]*)`", text)
    name = re.search(r"--config (\S+)", line)
    assert name
    (tmp_path / name[1]).write_text(filled, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "hubbub", *shlex.split(line)[1:]],
        capture_output=True,
        text=True,
        timeout=30,
        env=environment(),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{name[1]}: ok (1 hub configured)\n"


def test_configuration_defaults_are_the_documented_ones(tmp_path: Path) -> None:
    """The defaults in the table and in the example's commented-out lines are the real ones."""
    defaults = Config()
    documented: dict[str, object] = {}
    for row in re.findall(r"^\|(.*)\|$", section("Configuration"), re.MULTILINE):
        cells = [cell.strip() for cell in row.split("|")]
        setting = re.fullmatch(r"`server\.(\w+)`", cells[2])
        default = re.fullmatch(r"`([^`]+)`", cells[3])
        if setting and default:
            documented[setting[1]] = _literal(default[1])
    commented = re.findall(r"^# (\w+) = (\S+)", block("Configuration", "toml"), re.MULTILINE)
    assert commented, "the example has no commented-out settings"
    for key, value in commented:
        documented[key] = _literal(value)
    assert {"host", "port", "max_outbound_bytes"} <= set(documented)
    for key, value in documented.items():
        assert hasattr(defaults, key), f"server.{key} is documented but not a setting"
        if getattr(defaults, key) is not None:  # None: derived, such as the public endpoint
            assert getattr(defaults, key) == value, f"server.{key}"
    # The commented-out lines, uncommented, are valid as they stand.
    path = tmp_path / "hubbub.toml"
    path.write_text(
        "[server]\n" + "".join(f"{key} = {value}\n" for key, value in commented), encoding="utf-8"
    )
    load_config(str(path), env={})


def _literal(text: str) -> object:
    """A README value as TOML reads it; a bare word such as an address stays text."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def test_configuration_flags_exist() -> None:
    """Every flag the configuration table names is one ``hubbub serve`` takes."""
    flags = set(re.findall(r"`(--[\w-]+)`", section("Configuration")))
    assert flags >= {"--host", "--port", "--access-key", "--config"}
    result = subprocess.run(
        [sys.executable, "-m", "hubbub", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        env=environment(),
    )
    for flag in flags:
        assert f"{flag} " in result.stdout, flag


def test_production_examples_are_valid(tmp_path: Path, pki: Pki) -> None:
    """The Production section's TOML examples load with real files in place of its paths, its
    check-config example prints what the section shows, and the unit file reloads with HUP."""
    text = section("Production")
    paths = {
        "/etc/hubbub/tls/fullchain.pem": pki.server.cert_file,
        "/etc/hubbub/tls/privkey.pem": pki.server.key_file,
        "/etc/hubbub/tls/clients-ca.pem": pki.ca_file,
    }
    examples = [
        code for language, code in blocks("Production") if language == "toml" and "tls_" in code
    ]
    assert len(examples) == 2
    for example in examples:
        for documented, real in paths.items():
            example = example.replace(documented, str(real))
        path = tmp_path / "example.toml"
        path.write_text(example, encoding="utf-8")
        config = load_config(str(path), env={})
        assert config.tls
    unit = block("Production", "ini")
    assert "ExecReload=/bin/kill -HUP $MAINPID" in unit
    line = command_line(block("Production", "sh", "hubbub check-config"), "hubbub")
    shown = block("Production", "text", "Changes from").strip().splitlines()
    new_name, running_name = re.findall(r"--(?:config|against) (\S+)", line)
    keys = [
        "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCDEFGH",
        "secondary-0123456789-abcdefghijklmnopqrs",
    ]
    handler = '[[hubs.chat.event_handlers]]\nurl_template = "{}"\n'
    running = f'[auth]\naccess_keys = ["{keys[0]}", "{keys[1]}"]\n' + handler.format(
        "http://127.0.0.1:8081/eventhandler/{event}"
    )
    new = f'[auth]\naccess_keys = ["{keys[1]}"]\n' + handler.format(
        "https://app.internal/eventhandler/{event}"
    )
    (tmp_path / "etc").mkdir()
    (tmp_path / new_name).write_text(new, encoding="utf-8")
    (tmp_path / "etc" / "hubbub.toml").write_text(running, encoding="utf-8")
    args = shlex.split(line)[1:]
    args[args.index(running_name)] = str(tmp_path / "etc" / "hubbub.toml")
    result = subprocess.run(
        [sys.executable, "-m", "hubbub", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=environment(),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    printed = result.stdout.replace(str(tmp_path / "etc" / "hubbub.toml"), running_name)
    assert printed.splitlines() == shown
    assert "rotate a key" in text and "SIGHUP" in text


PRODUCTION = "Production"
ACCESS_SECTIONS = ("[auth.entra]", "[network]", "[limits]")


def test_production_access_examples_are_valid(tmp_path: Path) -> None:
    """Each example of the Entra, network and limits subsections loads as a configuration; the
    development mode with the loopback host it needs."""
    examples = [
        text
        for language, text in blocks(PRODUCTION)
        if language == "toml" and any(name in text for name in ACCESS_SECTIONS)
    ]
    assert len(examples) >= 4, examples
    for number, text in enumerate(examples):
        path = tmp_path / f"example{number}.toml"
        path.write_text(text, encoding="utf-8")
        config = load_config(str(path), env={})
        if "[limits]" in text:
            assert config.limits.max_connections_per_user == 5
        if "rest_port" in text:
            assert config.network.rest_port == 8081
        if "[auth.entra]" in text and "verify_signatures = false" not in text:
            assert config.entra is not None and len(config.entra.settings.principals) == 2


CLUSTER = "Cluster"
README_REDIS_URL = "redis://127.0.0.1:6379/0"


def test_cluster_configuration_example_is_valid(tmp_path: Path) -> None:
    """The cluster section's TOML is a valid file with the settings it names."""
    path = tmp_path / "cluster.toml"
    path.write_text(block(CLUSTER, "toml"), encoding="utf-8")
    config = load_config(str(path), env={})
    assert config.redis_url == "redis://redis.internal:6379/0"
    assert config.session_replication  # the example turns it on (the default is off)
    assert config.public_endpoint == "https://pubsub.example.com"


def test_cluster_compose_example_settings_are_valid() -> None:
    """The compose file's ``HUBBUB_*`` variables are valid settings of a cluster node, and
    its command is one ``hubbub serve`` takes."""
    compose = block(CLUSTER, "yaml")
    variables = dict(re.findall(r"^\s+(HUBBUB_\w+): (\S+)", compose, re.MULTILINE))
    assert set(variables) == {"HUBBUB_ACCESS_KEY", "HUBBUB_REDIS_URL", "HUBBUB_PUBLIC_ENDPOINT"}
    variables["HUBBUB_ACCESS_KEY"] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCDEFGH"
    config = load_config(None, env=variables)
    assert config.redis_url == "redis://redis:6379/0"
    assert config.endpoint == "http://localhost:8080"
    (command,) = re.findall(r"^  command: (hubbub serve .*)$", compose, re.MULTILINE)
    result = subprocess.run(
        [sys.executable, "-m", "hubbub", "check-config", *shlex.split(command)[2:]],
        capture_output=True,
        text=True,
        timeout=30,
        env={**environment(), **variables},
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.redis
def test_cluster_workers_command_serves(tmp_path: Path, redis_server: RedisServer) -> None:
    """The README's ``--workers`` command starts its workers on the given Redis and prints the
    connection string once; without the Redis URL it is the one line the README describes."""
    line = command_line(block(CLUSTER, "sh", "--workers"), "hubbub")
    assert README_REDIS_URL in line
    port = free_port()
    command = hubbub(line.replace(README_REDIS_URL, redis_server.url), port)
    with node(command, port, tmp_path / "out") as log:
        deadline = time.monotonic() + 20
        while "Connection string:" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        printed = log.read_text()
    assert printed.count("Connection string:") == 1
    assert re.search(rf"listening on http://127\.0\.0\.1:{port} with 2 workers", printed)
    assert len(re.findall(r"worker \d \(pid \d+, node \S+\) listening", printed)) == 2
    alone = subprocess.run(
        hubbub(line.replace(f" --redis-url {README_REDIS_URL}", ""), port),
        capture_output=True,
        text=True,
        timeout=30,
        env=environment(),
    )
    assert alone.returncode == 2
    assert alone.stderr.count("\n") == 1 and "--redis-url" in alone.stderr, alone.stderr
    assert "HUBBUB_REDIS_URL" in section(CLUSTER) and "engine.redis_url" in section(CLUSTER)
