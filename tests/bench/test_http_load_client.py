"""bench/http_load.py, the load bench's HTTP client: it reads answers by Content-Length and
chunks, and a server that never answers fails the request instead of hanging the bench."""

from __future__ import annotations

import asyncio
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from http_load import Connection, HttpError


async def _serve(handler: object) -> tuple[asyncio.Server, str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)  # type: ignore[arg-type]
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


def test_answers_by_length_and_chunks_and_a_silent_server_times_out() -> None:
    async def scenario() -> None:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while (await reader.readuntil(b"\r\n\r\n")).startswith(b"POST /len"):
                await reader.readexactly(2)  # the body "{}"
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello")
            await reader.readexactly(2)
            writer.write(b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
            await writer.drain()

        server, url = await _serve(answer)
        conn = Connection(url, timeout_s=5)
        assert await conn.send(conn.request_bytes("POST", "/len", b"{}")) == (200, {"content-length": "5", "x-a": "b"},
                                                                              b"hello")
        status, _, body = await conn.send(conn.request_bytes("POST", "/chunks", b"{}"))
        assert (status, body) == (201, b"abcde")
        await conn.close()
        server.close()

        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read()  # reads, never answers

        server, url = await _serve(silent)
        conn = Connection(url, timeout_s=0.3)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(HttpError, match=r"no answer within 0\.3 s"):
            await conn.send(conn.request_bytes("POST", "/x", b"{}"))
        assert loop.time() - t0 < 5
        server.close()

    with ThreadPoolExecutor(1) as pool:  # a thread of its own: the browser tests' Playwright loop may run in this one
        pool.submit(asyncio.run, scenario()).result()
