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
from typing import Any

import aiohttp
import httpx
import yarl


class AiohttpTransport(httpx.AsyncBaseTransport):
    """httpx transport sending through one pooled `aiohttp.ClientSession` (created lazily in the loop)."""

    def __init__(self, *, limits: httpx.Limits | None = None) -> None:
        self.limits = limits or httpx.Limits(max_connections=100)
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
            client_timeout = aiohttp.ClientTimeout(total=None, connect=limits[0], sock_connect=limits[1],
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

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.cookies = self.cookies  # through the setter below: the jar becomes an `_AnswerCookies`

    async def send(self, request: httpx.Request, *, stream: bool = False, auth: Any = httpx.USE_CLIENT_DEFAULT,
                   follow_redirects: Any = httpx.USE_CLIENT_DEFAULT) -> httpx.Response:
        """Send a request (httpx's `AsyncClient.send`)."""
        plain = (
            not stream
            and auth is httpx.USE_CLIENT_DEFAULT and self.auth is None
            and (follow_redirects is httpx.USE_CLIENT_DEFAULT and not self.follow_redirects
                 or follow_redirects is False)
            and not self.event_hooks["request"] and not self.event_hooks["response"]
            and not request.url.userinfo and not self.is_closed
        )
        if not plain:
            return await super().send(request, stream=stream, auth=auth, follow_redirects=follow_redirects)
        if "timeout" not in request.extensions:
            request.extensions = {**request.extensions, "timeout": self.timeout.as_dict()}
        response = await self._transport_for_url(request.url).handle_async_request(request)
        response.request = request
        try:
            await response.aread()  # a no-op for this package's transport, which reads the answer whole
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
