"""A lean httpx transport over aiohttp: the httpx API above, aiohttp's C HTTP parser below.

Why not httpx's default transport: it parses HTTP/1.1 in pure Python (h11) and was 5-10x slower than
aiohttp against the emulator here (bench/RESULTS.md). Why not `httpx_aiohttp.AiohttpTransport` as is:
it maps aiohttp's `ServerDisconnectedError` (the server closed the connection *after* our request was
written) to `httpx.ConnectTimeout`, which reads as "never sent" — wrong for exactly-once, where a
dropped connection means "maybe sent, look it up". This transport maps exceptions by what they mean
for delivery, and reads the (small) provider answers in one go.
`httpx.MockTransport` still replaces it in unit tests, since channels only see `httpx.AsyncClient`.
"""

from __future__ import annotations

import asyncio

import aiohttp
import httpx


class AiohttpTransport(httpx.AsyncBaseTransport):
    """httpx transport sending through one pooled `aiohttp.ClientSession` (created lazily in the loop)."""

    def __init__(self, *, limits: httpx.Limits | None = None) -> None:
        self.limits = limits or httpx.Limits(max_connections=100)
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            # A session is tied to the loop that made it (a flow may run each batch in its own loop).
            self._loop = loop
            connector = aiohttp.TCPConnector(limit=self.limits.max_connections or 0,
                                             keepalive_timeout=self.limits.keepalive_expiry or 5.0)
            # No cookie jar and no automatic decompression: providers' APIs need neither, and httpx
            # decodes content-encoding itself from the raw body.
            self._session = aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(),
                                                  auto_decompress=False)
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send one request; map aiohttp's exceptions to httpx's by their meaning for delivery."""
        session = self._get_session()
        timeout = request.extensions.get("timeout", {})
        client_timeout = aiohttp.ClientTimeout(total=None, connect=timeout.get("pool"),
                                               sock_connect=timeout.get("connect"), sock_read=timeout.get("read"))
        body = request.content if request.method not in ("GET", "HEAD") else None
        try:
            async with session.request(request.method, str(request.url), headers=request.headers.multi_items(),
                                       data=body or None,
                                       allow_redirects=False, timeout=client_timeout, compress=None) as response:
                content = await response.read()
                status, raw_headers = response.status, response.raw_headers
        except aiohttp.ClientConnectorError as exc:  # refused / unreachable: nothing was sent
            raise httpx.ConnectError(str(exc), request=request) from exc
        except aiohttp.ConnectionTimeoutError as exc:  # connect timeout: nothing was sent
            raise httpx.ConnectTimeout(str(exc), request=request) from exc
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:  # the answer did not come in time
            raise httpx.ReadTimeout(str(exc) or "read timeout", request=request) from exc
        except aiohttp.ServerDisconnectedError as exc:  # request written, connection closed: maybe sent
            raise httpx.RemoteProtocolError(str(exc) or "server disconnected", request=request) from exc
        except aiohttp.ClientPayloadError as exc:
            raise httpx.ReadError(str(exc), request=request) from exc
        except aiohttp.InvalidURL as exc:
            raise httpx.InvalidURL(str(exc)) from exc
        except aiohttp.ClientError as exc:  # any other client/OS error mid-exchange: maybe sent
            raise httpx.ReadError(f"{type(exc).__name__}: {exc}", request=request) from exc
        return httpx.Response(status, headers=raw_headers, content=content, request=request,
                              extensions={"http_version": b"HTTP/1.1"})

    async def aclose(self) -> None:
        """Close the aiohttp session and its connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None
