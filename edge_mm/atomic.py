"""Write files and folders so that a reader never sees half of one (torch-free).

Temporary names are unique per writer and carry its pid: `.NAME.<pid>.<random>.part`. Two writers
of one target never share a temporary, and a writer that was killed (SIGKILL, power loss) leaves
a temporary whose pid is gone: the next writer of the same target removes it (`clean_stale`).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Union


def temp_prefix(final: Path) -> str:
    """The start of every temporary name of `final` written by this process."""
    return f".{final.name}.{os.getpid()}."


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def clean_stale(final: Union[str, Path], suffix: str = ".part") -> int:
    """Remove temporaries of `final` (`.NAME.<pid>.<random><suffix>`) whose writer is no longer running."""
    final = Path(final)
    pattern = re.compile(rf"^\.{re.escape(final.name)}\.(\d+)\.[^/]*{re.escape(suffix)}$")
    removed = 0
    try:
        siblings = list(final.parent.iterdir())
    except OSError:
        return 0
    for sibling in siblings:
        match = pattern.match(sibling.name)
        if match is None or _pid_alive(int(match.group(1))):
            continue
        try:
            if sibling.is_dir() and not sibling.is_symlink():
                shutil.rmtree(sibling)
            else:
                sibling.unlink()
            removed += 1
        except OSError:
            pass  # another writer cleaned it first, or it is not ours to remove
    return removed


@contextlib.contextmanager
def atomic_path(final: Union[str, Path]) -> Iterator[Path]:
    """Yield a temporary path beside `final`; rename it over `final` only if the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(final)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(final), suffix=".part", dir=final.parent)
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
    clean_stale(final)
    clean_stale(final, suffix=".old")
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(final), suffix=".part", dir=final.parent))
    tmp.chmod(0o755)  # mkdtemp makes it owner-only; the result is an ordinary shared folder
    try:
        yield tmp
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=temp_prefix(final), suffix=".old", dir=final.parent))
            os.replace(final, old)  # onto the empty folder mkdtemp made: a rename, no copy
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
