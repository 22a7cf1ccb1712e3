"""Run a Starlette app with uvicorn in a background thread, behind runtime.web.guard, on a socket bound here.

Why Starlette + uvicorn: both are maintained, pure-Python (uvicorn's h11 protocol) with aarch64
wheels for Jetson, small (no template engine, no ORM), and ASGI gives streaming responses (MJPEG,
server-sent events) on one event loop, so 20 watching browsers cost 20 coroutines, not 20 threads.
uvicorn also brings what a hand-written server lacked: keep-alive timeouts (idle connections are
closed), a cap on concurrent connections answered with 503, and bounded header sizes.

    server = WebServer(app, "127.0.0.1", 8080)     # starts serving; server.url, server.token
    server.close()
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from typing import Any, Dict, Iterable, Optional

from edge_mm.errors import UsageError

from .address import bind_socket, format_host, is_loopback
from .guard import Guard, HostRule

log = logging.getLogger("edge_mm.runtime.web")

MAX_CONNECTIONS = 64  # beyond this many open connections uvicorn answers 503
IDLE_TIMEOUT_S = 5  # an idle keep-alive connection is closed after this long
MAX_HEADER_BYTES = 16 * 1024
HEADER_TIMEOUT_S = 10  # a connection must finish sending a request's headers within this long


def _protocol_class() -> Any:
    """uvicorn's h11 protocol with a deadline for request headers.

    uvicorn times out idle keep-alive connections only after a response; a connection that opens
    and sends nothing (or half a request line) would otherwise stay forever. Here every connection
    must complete its request headers within HEADER_TIMEOUT_S of opening, or of its last response.
    """
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderDeadlineH11(H11Protocol):
        _deadline: Any = None

        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(HEADER_TIMEOUT_S, self._too_slow)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _too_slow(self) -> None:
            self._deadline = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:
                self._disarm()  # the headers are in

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()

        def connection_lost(self, exc: Any) -> None:
            self._disarm()
            super().connection_lost(exc)

    return HeaderDeadlineH11


def make_token() -> str:
    return secrets.token_urlsafe(24)


class WebServer:
    """`app` served at http://HOST:PORT/ until close(); a token is made when binding beyond loopback.

    token: required on every route but /health; None with a loopback bind means no token (a token
    given for a loopback bind is still enforced). names: Host names the server answers to besides
    its address. body_limits: per-path request body caps (bytes).
    """

    def __init__(
        self,
        app: Any,
        host: str,
        port: int,
        *,
        token: Optional[str] = None,
        names: Iterable[str] = (),
        body_limits: Optional[Dict[str, int]] = None,
        flag: str = "--serve",
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        import uvicorn

        if token is not None and len(token) < 16:
            raise UsageError(f"{flag}-token must be at least 16 characters (a guessable token protects nothing)")
        self.token = token if token is not None else (None if is_loopback(host) else make_token())
        sock = bind_socket(host, port, flag)
        self.host, self.port = sock.getsockname()[:2]
        guarded = Guard(app, HostRule(self.host, names), self.token, body_limits)
        config = uvicorn.Config(
            guarded,
            http=_protocol_class(),
            ws="none",
            lifespan="off",
            log_config=None,
            access_log=False,  # an access log would record ?token=...
            proxy_headers=False,
            server_header=False,
            limit_concurrency=max_connections,
            timeout_keep_alive=IDLE_TIMEOUT_S,
            timeout_graceful_shutdown=1,
            h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="web-server", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self._server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not self._server.started:
            sock.close()
            raise UsageError(f"{flag}: the web server did not start on {self.address}; see the warnings above")
        self._closed = False

    @property
    def address(self) -> str:
        return f"{format_host(self.host)}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}/"

    @property
    def url_with_token(self) -> str:
        """The URL to open (with ?token=... when the server has one): print it, never log it."""
        return self.url + (f"?token={self.token}" if self.token else "")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._server.should_exit = True
        self._thread.join(timeout=10)
        if self._thread.is_alive():
            log.warning("the web server did not stop within 10 s")
