"""Download a file once, verify its SHA-256, and keep it in a cache (torch-free, urllib only).

A download goes to a `.part` file beside its final name and is renamed only after its checksum
matched, so the cache never holds a partial or wrong file.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Optional, Union

from tqdm import tqdm

from edge_mm.atomic import atomic_path
from edge_mm.errors import DownloadError
from edge_mm.hashing import sha256_file

CACHE_ENV = "EDGE_MM_CACHE"
_CHUNK = 1 << 20
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def cache_dir() -> Path:
    """The download cache: $EDGE_MM_CACHE, else ~/.cache/edge_mm."""
    override = os.environ.get(CACHE_ENV)
    return Path(override).expanduser() if override else Path.home() / ".cache" / "edge_mm"


def _fetch(url: str, dest: Path, timeout: float, progress: bool) -> str:
    """Stream `url` into `dest`; return the SHA-256 of the bytes received."""
    digest = hashlib.sha256()
    received = 0
    with urllib.request.urlopen(url, timeout=timeout) as response, open(dest, "wb") as out:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        with tqdm(
            total=total,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=Path(urllib.parse.urlparse(url).path).name or url,
            disable=not progress,
        ) as bar:
            for chunk in iter(lambda: response.read(_CHUNK), b""):
                out.write(chunk)
                digest.update(chunk)
                bar.update(len(chunk))
                received += len(chunk)
    if total is not None and received != total:
        raise DownloadError(
            f"download of {url} was cut short: got {received} of {total} bytes; nothing was cached, try again"
        )
    return digest.hexdigest()


def download_verified(
    url: str,
    sha256: str,
    dest_dir: Optional[Union[str, Path]] = None,
    filename: Optional[str] = None,
    timeout: float = 60.0,
    progress: bool = True,
) -> Path:
    """Return the path of `url`'s file in `dest_dir` (default: the cache), downloading it if needed.

    A cached file is used without touching the network when its SHA-256 is `sha256`; a cached file
    with another checksum is downloaded again. Raises DownloadError on HTTP or connection errors and
    on a checksum mismatch, and in every such case leaves nothing new in `dest_dir`.
    """
    expected = sha256.lower()
    if not _SHA256.match(expected):
        raise DownloadError(
            f"{sha256!r} is not a SHA-256 hex digest (64 hex characters); fix the expected checksum for {url}"
        )
    dest_dir = Path(dest_dir) if dest_dir is not None else cache_dir()
    filename = filename or Path(urllib.parse.urlparse(url).path).name
    if not filename:
        raise DownloadError(f"cannot name the file for {url}: pass filename=")
    final = dest_dir / filename

    if final.is_file() and sha256_file(final) == expected:
        return final

    try:
        with atomic_path(final) as part:
            got = _fetch(url, part, timeout, progress)
            if got != expected:
                raise DownloadError(
                    f"checksum mismatch for {url}: expected sha256 {expected}, got {got}; nothing was cached "
                    "(retry, or check the URL and expected checksum)"
                )
    except urllib.error.HTTPError as exc:
        raise DownloadError(
            f"download of {url} failed: HTTP {exc.code} {exc.reason}; check the URL or try again later"
        ) from None
    except urllib.error.URLError as exc:
        raise DownloadError(f"cannot reach {url}: {exc.reason}; check the network connection or the URL") from None
    except (OSError, http.client.HTTPException) as exc:
        raise DownloadError(f"download of {url} failed: {type(exc).__name__}: {exc}; try again") from None
    return final
