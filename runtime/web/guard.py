"""The checks every request passes before any route sees it (an ASGI middleware, no framework state).

- URL length: over MAX_URL bytes is 414.
- Host header: must name this server, so a page on another site cannot reach it through DNS
  rebinding (its requests carry `Host: evil.example`): the bound address, `localhost` on a loopback
  bind, any IP literal on a wildcard bind (0.0.0.0 / ::), and the names given (--serve-name).
- Token: when the server has one (always when bound beyond loopback), every route but /health needs
  it, as `Authorization: Bearer TOKEN`, the `edge_mm_token` cookie, or `?token=TOKEN` once (the
  reply then sets the cookie and, for a page, redirects to the URL without it). Compared with
  hmac.compare_digest; never logged (the server keeps no access log).
- Body size: each path has a cap (small by default; uploads larger); Content-Length over it is 413
  before the body is read, and a body that grows past it while streaming is cut off with 413.
"""

from __future__ import annotations

import hmac
import ipaddress
import urllib.parse
from typing import Any, Awaitable, Callable, Dict, Iterable, Optional

MAX_URL = 2048
DEFAULT_MAX_BODY = 16 * 1024
TOKEN_COOKIE = "edge_mm_token"
OPEN_PATHS = frozenset({"/health"})
PAGES = frozenset({"/", "/index.html"})

Scope = Dict[str, Any]
Receive = Callable[[], Awaitable[Dict[str, Any]]]
Send = Callable[[Dict[str, Any]], Awaitable[None]]


class _BodyTooLarge(Exception):
    pass


def host_of(header: str) -> str:
    """'[::1]:8080' -> '::1', 'Example.org:80' -> 'example.org'."""
    value = header.strip().lower()
    if value.startswith("["):
        return value[1:].partition("]")[0]
    if value.count(":") == 1:
        return value.partition(":")[0]
    return value


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


class HostRule:
    """Which Host headers name this server (see module docstring)."""

    def __init__(self, bound: str, names: Iterable[str] = ()) -> None:
        self.allowed = {bound.lower().strip("[]")} | {host_of(n) for n in names}
        try:
            address = ipaddress.ip_address(bound.strip("[]"))
            self.wildcard, loopback = address.is_unspecified, address.is_loopback
        except ValueError:
            self.wildcard, loopback = False, bound == "localhost"
        if loopback:
            self.allowed |= {"localhost", "127.0.0.1", "::1"}

    def allows(self, header: Optional[str]) -> bool:
        if not header:
            return False
        host = host_of(header)
        return host in self.allowed or (self.wildcard and _is_ip(host))


def _text(status: int, message: str, headers: Iterable[tuple] = ()) -> Callable[[Send], Awaitable[None]]:
    body = (message.rstrip("\n") + "\n").encode()

    async def respond(send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()),
                    (b"cache-control", b"no-store"),
                    *headers,
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return respond


class Guard:
    """ASGI middleware: URL length, Host, token and body-size checks around `app`."""

    def __init__(
        self,
        app: Any,
        hosts: HostRule,
        token: Optional[str] = None,
        body_limits: Optional[Dict[str, int]] = None,
        max_body: int = DEFAULT_MAX_BODY,
    ) -> None:
        self.app = app
        self.hosts = hosts
        self._token = token.encode() if token else None
        self.body_limits = dict(body_limits or {})
        self.max_body = int(max_body)

    def _token_ok(self, candidate: Optional[str]) -> bool:
        return bool(candidate) and hmac.compare_digest(candidate.encode(), self._token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, query = scope.get("path", ""), scope.get("query_string", b"")
        if len(scope.get("raw_path") or path.encode()) + len(query) > MAX_URL:
            await _text(414, f"the URL is longer than {MAX_URL} bytes; shorten the query")(send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if not self.hosts.allows(headers.get("host")):
            await _text(
                421,
                "this server does not answer to that Host name; open it by its address "
                "(or start it with --serve-name NAME for a name of your own)",
            )(send)
            return
        extra_headers = []
        if self._token is not None and path not in OPEN_PATHS:
            params = urllib.parse.parse_qs(query.decode("latin-1"))
            by_query = (params.get("token") or [None])[0]
            auth = headers.get("authorization", "")
            by_header = auth[7:].strip() if auth.lower().startswith("bearer ") else None
            by_cookie = _cookie(headers.get("cookie", ""), TOKEN_COOKIE)
            if self._token_ok(by_query):
                cookie = f"{TOKEN_COOKIE}={by_query}; Path=/; HttpOnly; SameSite=Strict".encode()
                if path in PAGES and scope.get("method") == "GET":
                    # Take the token out of the address bar (and out of the browser's history).
                    await _text(303, "see /", [(b"location", path.encode()), (b"set-cookie", cookie)])(send)
                    return
                extra_headers.append((b"set-cookie", cookie))
            elif not (self._token_ok(by_header) or self._token_ok(by_cookie)):
                await _text(
                    401,
                    "this server needs its token: open the URL printed at start (it ends in ?token=...) "
                    "or send 'Authorization: Bearer TOKEN'",
                )(send)
                return
        limit = self.body_limits.get(path, self.max_body)
        declared = headers.get("content-length")
        if declared is not None and not declared.isdigit():
            await _text(400, "the Content-Length header is not a number")(send)
            return
        if declared is not None and int(declared) > limit:
            await _text(413, f"the request body is over {limit} bytes; send a smaller one")(send)
            return
        await self._call_app(scope, receive, send, limit, extra_headers)

    async def _call_app(self, scope: Scope, receive: Receive, send: Send, limit: int, extra: list) -> None:
        received = 0
        started = False

        async def limited_receive() -> Dict[str, Any]:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge
            return message

        async def tracked_send(message: Dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if extra:
                    message = dict(message, headers=list(message.get("headers", [])) + extra)
            await send(message)

        try:
            await self.app(scope, limited_receive, tracked_send)
        except _BodyTooLarge:
            if not started:
                await _text(413, f"the request body is over {limit} bytes; send a smaller one")(send)


def _cookie(header: str, name: str) -> Optional[str]:
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None
