"""Where the web server listens: parse `--serve HOST:PORT`, bind the socket, say clearly why not.

The socket is bound here, before the server starts, so every failure is one line that names the
problem and the fix (a name that does not resolve, an address that is not this machine's, a port in
use) and so IPv6 (`[::1]:8080`) binds like IPv4.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from typing import Tuple

from edge_mm.errors import UsageError

DEFAULT_HOST = "127.0.0.1"
EXAMPLE = "give HOST:PORT or PORT, e.g. 127.0.0.1:8080, [::1]:8080 or 8080"


def parse_host_port(text: str, flag: str = "--serve") -> Tuple[str, int]:
    """'HOST:PORT', '[V6]:PORT', ':PORT' or 'PORT' -> (host, port); host defaults to 127.0.0.1, port 0 = any free one."""
    value = str(text).strip()
    if value.startswith("["):
        host, close, rest = value[1:].partition("]")
        if not close or (rest and not rest.startswith(":")):
            raise UsageError(f"{flag} {text!r}: {EXAMPLE}")
        port_text = rest[1:] if rest else ""
    else:
        host, sep, port_text = value.rpartition(":")
        if not sep:
            host, port_text = "", value
        elif ":" in host:
            raise UsageError(f"{flag} {text!r}: put an IPv6 address in brackets, e.g. [::1]:8080")
    host = host or DEFAULT_HOST
    try:
        port = int(port_text)
    except ValueError:
        raise UsageError(f"{flag} {text!r}: {EXAMPLE}") from None
    if not 0 <= port <= 65535:
        raise UsageError(f"{flag} {text!r}: the port must be 0-65535")
    return host, port


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and 'localhost' (the only binds that need no token)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def format_host(host: str) -> str:
    """The host as it appears in a URL (IPv6 in brackets)."""
    return f"[{host}]" if ":" in host else host


def bind_socket(host: str, port: int, flag: str = "--serve") -> socket.socket:
    """A listening TCP socket on (host, port), IPv4 or IPv6; UsageError with the fix if it cannot be had."""
    where = f"{format_host(host)}:{port}"
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        raise UsageError(
            f"{flag} {where}: the host {host!r} does not resolve here; give an IP address of this machine "
            "(127.0.0.1, [::1], 0.0.0.0 for all) or a name it resolves"
        ) from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and host in ("::", "[::]"):
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            fix = "another program uses the port; choose another port (0 picks a free one)"
        elif exc.errno == errno.EADDRNOTAVAIL:
            fix = "the address is not one of this machine's; give one of its addresses, 0.0.0.0 for all, or 127.0.0.1"
        elif exc.errno == errno.EACCES:
            fix = "ports below 1024 need privileges; choose a port of 1024 or more (0 picks a free one)"
        elif exc.errno == errno.EAFNOSUPPORT:
            fix = "this machine has no IPv6 (or IPv4) for that address; give an address of the other family"
        else:
            fix = "choose another address or port"
        raise UsageError(f"{flag} {where}: cannot listen there ({exc.strerror}); {fix}") from None
    sock.setblocking(False)
    return sock
