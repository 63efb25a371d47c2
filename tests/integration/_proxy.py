"""A TCP proxy on loopback that can cut every connection through it abruptly (no close frame)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from types import TracebackType


class CuttingProxy:
    """Forwards ``127.0.0.1:<port>`` to a target; :meth:`cut` resets every open connection."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self.port = 0
        self.cuts = 0

    async def __aenter__(self) -> CuttingProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    @property
    def open_connections(self) -> int:
        return len(self._pairs)

    def cut(self) -> int:
        """Reset every connection through the proxy, in both directions; returns how many."""
        pairs = list(self._pairs)
        self._pairs.clear()
        for client, upstream in pairs:
            for writer in (client, upstream):
                sock = writer.get_extra_info("socket")
                if sock is not None and not writer.transport.is_closing():
                    # SO_LINGER 0: close sends RST, as a dropped network path would look.
                    with contextlib.suppress(OSError):
                        linger = struct.pack("ii", 1, 0)
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                writer.transport.abort()
        self.cuts += len(pairs)
        return len(pairs)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        pair = (writer, up_writer)
        self._pairs.add(pair)
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        self._pairs.discard(pair)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.transport.abort()
