"""What one small write to a loopback TCP socket costs this machine's kernel.

The floor under fan-out latency: a pass that writes to every member of a 1,000-member group
makes 1,000 ``send`` calls, whatever the server is written in. This sends ``--size`` bytes to
each of ``--connections`` sockets, ``--rounds`` times, from CPU 0 while a reader process drains
them on CPU 1 (as in bench/run.py), and prints the CPU time per call and per pass.

    python bench/writecost.py [--connections 1000] [--rounds 200]
"""

from __future__ import annotations

import argparse
import os
import selectors
import socket
import sys
import time


def drain(port: int, count: int) -> None:
    """The reader: open ``count`` connections and read until the writer closes them."""
    os.sched_setaffinity(0, {1})
    selector = selectors.DefaultSelector()
    for _ in range(count):
        conn = socket.create_connection(("127.0.0.1", port))
        conn.setblocking(False)
        selector.register(conn, selectors.EVENT_READ)
    open_ = count
    while open_:
        for key, _ in selector.select():
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                continue
            if not data:
                selector.unregister(sock)
                sock.close()
                open_ -= 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    port = listener.getsockname()[1]
    child = os.fork()
    if child == 0:
        drain(port, args.connections)
        os._exit(0)
    os.sched_setaffinity(0, {0})
    conns = [listener.accept()[0] for _ in range(args.connections)]
    for conn in conns:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.setblocking(False)
    print(f"{args.connections} loopback connections, {args.rounds} passes, writer on CPU 0")
    for size in (200, 1400, 3000):
        message = b"x" * size
        started = time.process_time()
        for _ in range(args.rounds):
            for conn in conns:
                conn.send(message)
            time.sleep(0.002)  # let the reader keep up, as between flushes
        spent = time.process_time() - started
        per_call = spent / (args.rounds * args.connections)
        print(
            f"{size:5d} B: {per_call * 1e6:5.2f} us CPU per send, "
            f"{per_call * args.connections * 1e3:5.2f} ms per pass over every connection"
        )
    for conn in conns:
        conn.close()
    os.waitpid(child, 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
