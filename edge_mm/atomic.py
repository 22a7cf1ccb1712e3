"""Write files and folders so that a reader never sees half of one (torch-free)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Union


@contextlib.contextmanager
def atomic_path(final: Union[str, Path]) -> Iterator[Path]:
    """Yield a temporary path beside `final`; rename it over `final` only if the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".part", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    tmp_path.chmod(0o644)  # mkstemp makes it owner-only; the result is an ordinary file
    try:
        yield tmp_path
        os.replace(tmp_path, final)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(final: Union[str, Path]) -> Iterator[Path]:
    """Yield a temporary folder beside `final`; swap it in for `final` only if the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".part", dir=final.parent))
    tmp.chmod(0o755)  # mkdtemp makes it owner-only; the result is an ordinary shared folder
    try:
        yield tmp
        if final.exists():
            old = final.with_name(f".{final.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: Union[str, Path], data: object, **dumps_options: object) -> Path:
    """Write `data` as JSON (plus a final newline) atomically; `dumps_options` go to json.dumps."""
    import json

    dumps_options.setdefault("indent", 2)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, **dumps_options) + "\n")  # type: ignore[arg-type]
    return Path(path)
