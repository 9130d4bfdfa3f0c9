"""A lean httpx transport over aiohttp: the httpx API above, aiohttp's C HTTP parser below.

Why not httpx's default transport: it parses HTTP/1.1 in pure Python (h11) and was 5-10x slower than
aiohttp against the emulator here (bench/RESULTS.md). Why not `httpx_aiohttp.AiohttpTransport` as is:
it maps aiohttp's `ServerDisconnectedError` (the server closed the connection *after* our request was
written) to `httpx.ConnectTimeout`, which reads as "never sent" — wrong for exactly-once, where a
dropped connection means "maybe sent, look it up". This transport maps exceptions by what they mean
for delivery.
`httpx.MockTransport` still replaces it in unit tests, since channels only see `httpx.AsyncClient`.

Every exchange is bounded, whatever the server does: a total deadline per request (aiohttp's `total`
timeout here, and `ProviderClient` around any transport — a server trickling one byte every half
second never trips a per-read timeout), and a maximum answer size (`MAX_RESPONSE_BYTES`, counted while
the body streams in, before and after content decoding, so neither a 300 MB answer nor a gzip bomb is
ever held in memory). Either bound ends the request as a read error: the request may have arrived,
so the engine looks the message up before sending it again.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import httpx
import yarl

# Provider answers are a few hundred bytes (an id, an error list, a page of 100 lookups ~100 KB).
MAX_RESPONSE_BYTES = 1 << 20
_CHUNK = 16 * 1024  # decoded in slices: one gzip slice inflates to at most ~16 MB before the size check


class ResponseTooLarge(httpx.ReadError):
    """The answer exceeded `MAX_RESPONSE_BYTES`; it was abandoned while streaming in."""


class _Body(httpx.AsyncByteStream):
    """An answer's raw bytes, handed out in slices (a plain `content=` would be decoded eagerly, whole)."""

    def __init__(self, content: bytes) -> None:
        self._content = content

    async def __aiter__(self):
        for start in range(0, len(self._content), _CHUNK):
            yield self._content[start:start + _CHUNK]


async def read_capped(response: httpx.Response, limit: int = MAX_RESPONSE_BYTES) -> bytes:
    """Read a streamed httpx response's decoded body, abandoning it past `limit` bytes (`ResponseTooLarge`)."""
    declared = response.headers.get("content-length")
    if declared and declared.strip().isdigit() and int(declared) > limit:
        raise ResponseTooLarge(f"response body of {int(declared):,} bytes is over the {limit:,}-byte limit",
                               request=response.request)
    chunks, size = [], 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            raise ResponseTooLarge(f"response body over the {limit:,}-byte limit", request=response.request)
        chunks.append(chunk)
    content = b"".join(chunks)
    # What httpx's own `aread()` stores: `.content`, `.text` and `.json()` read it from here.
    response._content = content
    return content


class AiohttpTransport(httpx.AsyncBaseTransport):
    """httpx transport sending through one pooled `aiohttp.ClientSession` (created lazily in the loop)."""

    def __init__(self, *, limits: httpx.Limits | None = None, deadline_s: float | None = None,
                 max_response_bytes: int = MAX_RESPONSE_BYTES) -> None:
        self.limits = limits or httpx.Limits(max_connections=100)
        self.deadline_s = deadline_s  # total time of one exchange, connecting to the last byte
        self.max_response_bytes = max_response_bytes
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Parsed URLs by text: a channel posts to a handful of endpoints, and aiohttp would re-parse
        # the same string into a yarl.URL on every request.
        self._urls: dict[str, yarl.URL] = {}
        self._timeouts: dict[tuple, aiohttp.ClientTimeout] = {}

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
        limits = (timeout.get("pool"), timeout.get("connect"), timeout.get("read"))
        client_timeout = self._timeouts.get(limits)
        if client_timeout is None:  # one per distinct setting (a client has one or two)
            client_timeout = aiohttp.ClientTimeout(total=self.deadline_s, connect=limits[0], sock_connect=limits[1],
                                                   sock_read=limits[2])
            if len(self._timeouts) < 64:
                self._timeouts[limits] = client_timeout
        body = request.content if request.method not in ("GET", "HEAD") else None
        text = str(request.url)
        url = self._urls.get(text)
        if url is None:
            # encoded=True: httpx already percent-encoded it; yarl must not encode it again.
            url = yarl.URL(text, encoded=True)
            if len(self._urls) < 1024:  # lookups carry a key in the query: do not grow without bound
                self._urls[text] = url
        try:
            async with session.request(request.method, url, headers=request.headers.multi_items(),
                                       data=body or None,
                                       allow_redirects=False, timeout=client_timeout, compress=None) as response:
                status, raw_headers = response.status, response.raw_headers
                content = await self._read(response, request)
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
        except ValueError as exc:  # a header or status line aiohttp could not make sense of
            raise httpx.ReadError(f"unreadable answer: {type(exc).__name__}", request=request) from exc
        return httpx.Response(status, headers=raw_headers, stream=_Body(content), request=request,
                              extensions={"http_version": b"HTTP/1.1"})

    async def _read(self, response: aiohttp.ClientResponse, request: httpx.Request) -> bytes:
        """The raw body, read while it streams in and abandoned (connection closed) past the size limit."""
        limit = self.max_response_bytes
        if response.content_length is not None and response.content_length > limit:
            response.close()
            raise ResponseTooLarge(f"response body of {response.content_length:,} bytes is over the "
                                   f"{limit:,}-byte limit", request=request)
        chunks, size = [], 0
        async for chunk in response.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > limit:
                response.close()  # never back into the pool with the rest of the body unread
                raise ResponseTooLarge(f"response body over the {limit:,}-byte limit", request=request)
            chunks.append(chunk)
        return b"".join(chunks)

    async def aclose(self) -> None:
        """Close the aiohttp session and its connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None


class _AnswerCookies(httpx.Cookies):
    """httpx's client cookie jar, minus its per-response cost when the answer sets no cookie.

    `AsyncClient` hands every response to `Cookies.extract_cookies`, which wraps the request in a
    `urllib.request.Request` and the headers in an `email.message.Message` before the standard
    library's `CookieJar` finds no `Set-Cookie` in them: 4 % of `winback send`'s time, for provider
    APIs that set no cookies. Answers that do set one go through the standard path unchanged.
    """

    def extract_cookies(self, response: httpx.Response) -> None:
        """Store the response's cookies (only looked at when it has a Set-Cookie header)."""
        headers = response.headers
        if "set-cookie" in headers or "set-cookie2" in headers:
            super().extract_cookies(response)


class ProviderClient(httpx.AsyncClient):
    """`httpx.AsyncClient` (same API, same behaviour) with a shorter path for plain provider calls.

    - Its cookie jar skips answers without cookies (see `_AnswerCookies`).
    - `send` goes straight to the transport when the generic layers have nothing to do: no auth
      (neither the client's, the call's nor the URL's), no redirect following, no event hooks, not
      streaming. httpx's own path wraps the exchange in an auth-flow generator, a redirect loop and a
      bound stream (about a tenth of `winback send`'s CPU per message, bench/RESULTS.md); the
      request, the transport, timeouts, cookies and the read response are the same. Anything else
      (Mailgun's and Twilio's BasicAuth, for one) takes httpx's path unchanged.
    """

    def __init__(self, *, deadline_s: float | None = None, max_response_bytes: int = MAX_RESPONSE_BYTES,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.cookies = self.cookies  # through the setter below: the jar becomes an `_AnswerCookies`
        self.deadline_s = deadline_s
        self.max_response_bytes = max_response_bytes

    async def send(self, request: httpx.Request, *, stream: bool = False, auth: Any = httpx.USE_CLIENT_DEFAULT,
                   follow_redirects: Any = httpx.USE_CLIENT_DEFAULT) -> httpx.Response:
        """Send a request (httpx's `AsyncClient.send`), within the total deadline and the size limit."""
        if stream:  # the caller reads (and bounds) the body itself
            return await super().send(request, stream=True, auth=auth, follow_redirects=follow_redirects)
        try:
            async with asyncio.timeout(self.deadline_s):
                return await self._send_bounded(request, auth, follow_redirects)
        except TimeoutError:
            raise httpx.ReadTimeout(f"no complete answer within the {self.deadline_s:g} s deadline",
                                    request=request) from None

    async def _send_bounded(self, request: httpx.Request, auth: Any, follow_redirects: Any) -> httpx.Response:
        plain = (
            auth is httpx.USE_CLIENT_DEFAULT and self.auth is None
            and (follow_redirects is httpx.USE_CLIENT_DEFAULT and not self.follow_redirects
                 or follow_redirects is False)
            and not self.event_hooks["request"] and not self.event_hooks["response"]
            and not request.url.userinfo and not self.is_closed
        )
        if not plain:
            response = await super().send(request, stream=True, auth=auth, follow_redirects=follow_redirects)
            try:
                await read_capped(response, self.max_response_bytes)
            finally:
                await response.aclose()
            return response
        if "timeout" not in request.extensions:
            request.extensions = {**request.extensions, "timeout": self.timeout.as_dict()}
        response = await self._transport_for_url(request.url).handle_async_request(request)
        response.request = request
        try:
            await read_capped(response, self.max_response_bytes)
        finally:
            await response.aclose()
        self.cookies.extract_cookies(response)
        response.default_encoding = self._default_encoding
        return response

    @property
    def cookies(self) -> httpx.Cookies:
        """The client's cookie jar."""
        return self._cookies

    @cookies.setter
    def cookies(self, cookies: Any) -> None:
        self._cookies = _AnswerCookies(cookies)
