"""sha256 of a file, read in chunks (torch-free); the one helper every module imports."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Union

CHUNK = 1 << 20


def sha256_file(path: Union[str, Path], chunk: int = CHUNK) -> str:
    """Hex sha256 of the file at `path`, read `chunk` bytes at a time (large weights never sit in memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()
