"""A round-robin TCP balancer for cluster tests: each accepted connection goes to the next
node (a node that refuses is skipped), so REST calls, clients and their reconnects land on
different nodes. It runs its own event loop in a thread: the tests' SDK calls may block.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading

__all__ = ["Balancer"]


class Balancer:
    """``with Balancer(ports) as balancer:`` listens on ``balancer.port``."""

    def __init__(self, backends: list[int]) -> None:
        self.backends = list(backends)
        self.port = 0
        self.routed: list[int] = []
        """The backend port of every connection accepted, in order."""
        self._turn = itertools.count()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._links: dict[int, asyncio.Task[None]] = {}

    def __enter__(self) -> Balancer:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(5)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _listen(self) -> asyncio.Server:
        return await asyncio.start_server(self._accept, "127.0.0.1", 0)

    async def _close(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._pipes.add(task)
        try:
            upstream = await self._connect()
            if upstream is None:
                return
            up_reader, up_writer = upstream
            self._links[len(self.routed) - 1] = task
            pipes = [
                asyncio.ensure_future(_pipe(reader, up_writer)),
                asyncio.ensure_future(_pipe(up_reader, writer)),
            ]
            try:
                await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
            finally:  # one side is gone: so is the other (a killed node drops its clients)
                for pipe in pipes:
                    pipe.cancel()
                await asyncio.gather(*pipes, return_exceptions=True)
                up_writer.close()
        except asyncio.CancelledError:
            pass  # severed (or the balancer closes)
        finally:
            self._pipes.discard(task)
            writer.close()

    def sever(self, index: int) -> None:
        """Cut the ``index``-th routed connection at both ends, with no close frame (a
        network failure, as both the client and the node see it)."""
        task = self._links.get(index)
        if task is not None:
            self._loop.call_soon_threadsafe(task.cancel)

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        for _ in range(len(self.backends)):
            port = self.backends[next(self._turn) % len(self.backends)]
            try:
                connection = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                continue  # a node that is down: the next one
            self.routed.append(port)
            return connection
        return None


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
