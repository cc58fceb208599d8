"""A loopback TCP proxy that a test can cut, stall and restore, to fault a real server.

It forwards ``127.0.0.1:<port>`` to an upstream (PostgreSQL on 127.0.0.1:5432 in these
tests) so a test can break the link of one client without touching the server that
everyone else on the machine uses:

- ``cut()`` closes every forwarded connection and stops listening, so new connections
  are refused (ECONNREFUSED), as when a network path or the server goes away;
- ``stall()`` keeps accepting connections but forwards nothing in either direction, as
  a hung server or a black-holed route does; bytes received meanwhile are held;
- ``restore()`` listens again on the same port and, after a stall, delivers what was held.

It runs on the event loop of the test that starts it and touches only loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType

_CHUNK = 64 * 1024


class TcpProxy:
    """Forward ``listen_host:port`` to ``upstream_host:upstream_port``; faults on demand."""

    def __init__(
        self,
        upstream_host: str = "127.0.0.1",
        upstream_port: int = 5432,
        *,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
    ) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._listen_host = listen_host
        self._port = listen_port
        self._server: asyncio.Server | None = None
        # Set while data may flow; cleared by stall() so every pump waits before writing.
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.accepted = 0

    @property
    def port(self) -> int:
        """The loopback port clients connect to (known once started)."""
        if not self._port:
            raise RuntimeError("the proxy has no port yet; await start() first")
        return self._port

    @property
    def state(self) -> str:
        """``open``, ``cut`` or ``stalled``."""
        if self._server is None:
            return "cut"
        return "open" if self._flowing.is_set() else "stalled"

    async def start(self) -> None:
        """Start listening (on a free port unless one was given)."""
        await self._listen()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._on_client, self._listen_host, self._port, reuse_address=True
        )
        self._port = int(self._server.sockets[0].getsockname()[1])

    async def cut(self) -> None:
        """Close every forwarded connection and refuse new ones until ``restore()``."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        self._drop_all()
        # Pumps blocked on a stall must wake up to notice their sockets are gone.
        self._flowing.set()

    def stall(self) -> None:
        """Keep accepting connections but forward nothing until ``restore()``."""
        self._flowing.clear()

    async def restore(self) -> None:
        """Forward again: listen again after a cut, deliver held bytes after a stall."""
        self._flowing.set()
        if self._server is None:
            await self._listen()

    async def close(self) -> None:
        """Stop listening and close every connection."""
        await self.cut()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def __aenter__(self) -> TcpProxy:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _drop_all(self) -> None:
        for writer in list(self._writers):
            # abort(), not close(): a cut link loses what is in flight, it does not flush.
            writer.transport.abort()
        self._writers.clear()

    async def _on_client(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        self.accepted += 1
        self._writers.add(client_writer)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        except OSError:
            client_writer.transport.abort()
            self._writers.discard(client_writer)
            return
        self._writers.add(up_writer)
        pumps = [
            asyncio.create_task(self._pump(client_reader, up_writer)),
            asyncio.create_task(self._pump(up_reader, client_writer)),
        ]
        for task in pumps:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*pumps, return_exceptions=True)
        for writer in (client_writer, up_writer):
            writer.transport.abort()
            self._writers.discard(writer)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await reader.read(_CHUNK)
                if not data:
                    break
                await self._flowing.wait()
                if writer.transport.is_closing():
                    break
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            # One side finished: close the other so the peer sees the link end.
            writer.transport.abort()
