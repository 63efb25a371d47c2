"""In-process cost of one event POST to an upstream handler: µs of CPU per event.

``HttpUpstream.invoke`` (request build, connection reuse, signature, the answer read and
parsed) against an aiohttp event handler that answers at once, started as a child process
pinned to CPU 1 while this process runs on CPU 0; 100 concurrent callers, one connection id
each, 100-byte text bodies. The figure is this process's CPU time per event (process time, so
a busy machine's other work does not count): the upstream part of bench scenario (f) without
the WebSocket side.

    PYTHONPATH=<src>:. python bench/upstream_micro.py [--events 20000] [--repeat 3]

Run it on two revisions' ``src/`` for an A/B comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import uvloop

from hubbub.config import load_config
from hubbub.protocol.cloudevents import EventContext
from hubbub.upstream import HttpUpstream

CALLERS = 100
HANDLER = """
import sys
from aiohttp import web

async def probe(request):
    return web.Response(headers={"WebHook-Allowed-Origin": "*"})

async def echo(request):
    return web.Response(body=await request.read(), content_type="text/plain")

app = web.Application()
app.router.add_route("OPTIONS", "/{tail:.*}", probe)
app.router.add_post("/{tail:.*}", echo)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_listening(port: int) -> None:
    for _ in range(200):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return
    raise RuntimeError("the handler did not start")


async def run(port: int, events: int, repeat: int) -> list[float]:
    text = (
        f'[auth]\naccess_keys = ["{"k" * 44}"]\n[[hubs.chat.event_handlers]]\n'
        f'url_template = "http://127.0.0.1:{port}/h/{{event}}"\nuser_event_pattern = "*"\n'
    )
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(text)
    config = load_config(f.name, env={})
    os.unlink(f.name)
    upstream = HttpUpstream(config)

    async def caller(index: int, count: int) -> None:
        connection = f"conn-{index:020d}"
        for event_id in range(count):
            context = EventContext("chat", connection, f"user{index}", None, None, event_id)
            handler = upstream.handler("chat", "message", False)
            assert handler is not None
            response = await upstream.invoke(
                handler, context, "message", False, b"x" * 100, "text/plain; charset=utf-8"
            )
            assert len(response.body) == 100

    await asyncio.gather(*(caller(i, 20) for i in range(CALLERS)))
    figures = []
    for _ in range(repeat):
        start = time.process_time()
        await asyncio.gather(*(caller(i, events // CALLERS) for i in range(CALLERS)))
        figures.append((time.process_time() - start) / events * 1e6)
    await upstream.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    port = free_port()
    handler = subprocess.Popen(["taskset", "-c", "1", sys.executable, "-c", HANDLER, str(port)])
    try:
        os.sched_setaffinity(0, {0})
        figures = uvloop.run(_main(port, args.events, args.repeat))
    finally:
        handler.terminate()
        handler.wait()
    shown = ", ".join(f"{f:.1f}" for f in figures)
    print(
        f"µs of CPU per event: {shown}; best {min(figures):.1f},"
        f" median {statistics.median(figures):.1f}"
    )


async def _main(port: int, events: int, repeat: int) -> list[float]:
    await wait_listening(port)
    return await run(port, events, repeat)


if __name__ == "__main__":
    main()
