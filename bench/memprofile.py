"""Where an idle client connection's memory goes: a tracemalloc breakdown per source file.

Runs a hubbub node in this process (the same listener and app as ``hubbub serve``), opens
``--connections`` idle JSON-subprotocol WebSockets to it from a child process, and prints the
Python memory the node allocated per connection, by file or by line, next to the growth of its
resident set (which tracemalloc's own bookkeeping inflates; bench/run.py's scenario (d) gives
the figure without it).

    python bench/memprofile.py [--connections 3000] [--by lineno] [--top 25]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

KEY = "bench-access-key-0123456789abcdefghijklmnopqrstuvwxyz"
HUB = "bench"


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def clients(port: int, count: int, ready: int) -> None:
    """The child: ``count`` idle members, then a byte on ``ready``, then wait to be killed."""
    import uvloop
    from loadgen import Server, Stats, open_ws

    async def run() -> None:
        server = Server("hubbub", "127.0.0.1", port, KEY, HUB)
        path = server.client_path("g0", None, [])
        held = [await open_ws(server, "127.0.0.1", path, Stats()) for _ in range(count)]
        os.write(ready, b"x")
        await asyncio.sleep(3600)
        del held

    uvloop.run(run())


async def node(args: argparse.Namespace) -> None:
    from aiohttp import web

    from hubbub.cli import _config, _parser
    from hubbub.server.app import build_app
    from hubbub.server.port import listen

    config = _config(_parser().parse_args(["serve", "--port", "0", "--access-key", KEY]))
    runner = web.AppRunner(build_app(config), access_log=None, handle_signals=False)
    await runner.setup()
    listener = await listen(runner, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    read_end, write_end = os.pipe()
    gc.collect()
    tracemalloc.start(1)
    before, rss_before = tracemalloc.take_snapshot(), rss_kib()
    child = os.fork()
    if child == 0:
        clients(port, args.connections, write_end)
        os._exit(0)
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    loop.add_reader(read_end, lambda: ready.done() or ready.set_result(None))
    await ready
    await asyncio.sleep(1)
    gc.collect()
    after, rss_after = tracemalloc.take_snapshot(), rss_kib()
    os.kill(child, 9)
    n = args.connections
    stats = after.compare_to(before, args.by)
    total = sum(s.size_diff for s in stats)
    print(f"{n} idle connections")
    print(f"resident set growth: {(rss_after - rss_before) / n:.2f} KiB per connection")
    print(f"Python allocations: {total / n / 1024:.2f} KiB per connection, of which:")
    for stat in stats[: args.top]:
        frame = stat.traceback[0]
        where = frame.filename if args.by == "filename" else f"{frame.filename}:{frame.lineno}"
        print(f"{stat.size_diff / n:8.0f} B {stat.count_diff / n:6.2f} objects  {where}")
    listener.close()
    await runner.cleanup()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=3000)
    parser.add_argument("--by", choices=["filename", "lineno"], default="filename")
    parser.add_argument("--top", type=int, default=25)
    import uvloop

    uvloop.run(node(parser.parse_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
