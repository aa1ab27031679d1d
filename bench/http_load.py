"""A lean HTTP/1.1 load client for bench/load_predict.py: one keep-alive connection per
simulated client, each request's bytes built once, the response read by its
Content-Length (or chunks). On the 2-core test machine httpx spent ~2 ms of CPU per
request — as much as the service it measured — so its own cost capped the req/s seen."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit


class HttpError(Exception):
    """The server closed the connection or sent something that is not HTTP/1.1."""


class Connection:
    def __init__(self, url: str, headers: dict[str, str] | None = None, timeout_s: float = 60.0) -> None:
        parts = urlsplit(url)
        self.timeout_s = timeout_s  # a server that hangs fails the request (HttpError), not the bench
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self._head = f"Host: {self.host}:{self.port}\r\n{extra}"
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    def request_bytes(self, method: str, path: str, body: bytes = b"", content_type: str = "application/json") -> bytes:
        return (f"{method} {path} HTTP/1.1\r\n{self._head}Content-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode() + body

    async def send(self, raw: bytes) -> tuple[int, dict[str, str], bytes]:
        """(status, headers with lower-case names, body) of one prebuilt request; HttpError
        when the connection is lost or no answer comes within ``timeout_s``."""
        try:
            async with asyncio.timeout(self.timeout_s):
                if self._writer is None:
                    self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
                assert self._reader is not None
                self._writer.write(raw)
                status, headers, body = await self._response(self._reader)
        except TimeoutError:
            await self.close()  # the late answer would be read as the next request's
            raise HttpError(f"no answer within {self.timeout_s:g} s") from None
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            await self.close()
            raise HttpError(f"connection lost: {exc}") from None
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return status, headers, body

    @staticmethod
    async def _response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
        line = await reader.readuntil(b"\r\n")
        parts = line.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise HttpError(f"not an HTTP/1.x status line: {line[:80]!r}")
        headers: dict[str, str] = {}
        while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
                chunks.append(await reader.readexactly(size))
                await reader.readexactly(2)
            await reader.readuntil(b"\r\n")  # the empty trailer
            body = b"".join(chunks)
        else:
            body = b""
        return int(parts[1]), headers, body

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._reader = self._writer = None
