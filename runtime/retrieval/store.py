"""The on-device embedding store: fp16 vectors in a flat file, item metadata in SQLite (torch-free).

An index is a folder:

    vectors.f16   row-major float16, one row of `dim` values per item, only ever appended
    meta.sqlite   items (id = row number, metadata, thumbnail, tombstone) and an info table: dim,
                  model, spec digest, format, index uuid, deletion counter
    writer.lock   held (fcntl.flock) by the one process that may add; holds its pid
    graph-*.bin   derived search graphs (runtime/retrieval/ann.py); never the truth, rebuilt at will

Crash safety comes from the order of an `add`: the new rows are written past the committed ones
and fsync'ed first, and only then is the SQLite transaction that names them committed. The
committed row count in SQLite is the truth; a longer vectors file (the tail of an add that was
killed before its commit) is ignored by readers and cut off by the next writer. SQLite runs in WAL
mode so readers search while one writer adds.

API:

    store = IndexStore(path, dim=512, model_info=ModelInfo.from_spec(spec), mode="a")
    ids = store.add(vectors, [{"content_hash": h, "path": p, "thumbnail": jpeg_bytes}, ...])
    store.items(ids)          metadata dicts (id, content_hash, path, frame_time, box, source,
                              added_at, extra, deleted_at, has_thumbnail)
    store.thumbnail(id)       the item's JPEG bytes, or None (runtime.retrieval.thumbnail makes them)
    store.remove(ids)         tombstone: the rows stay on disk, every search skips them
    store.select_ids(path_glob=..., before=...)   ids to remove by path pattern or add time
    store.deleted_ids()       sorted int64 ids of tombstoned rows (what searches skip)

A thumbnail is a small JPEG (longest side <= 128 px, at most MAX_THUMBNAIL_BYTES) committed in the
same SQLite transaction as its item, so an item and its thumbnail appear together or not at all.
A tombstone is one UPDATE in one transaction (and bumps the `deletions` counter that searchers
read to refresh their skip list); re-adding a removed content hash revives its row. The disk space
of removed rows comes back with runtime/retrieval/compact.py (`edge-mm-index compact`), which
builds a new index aside and renames it in.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import math
import os
import shutil
import sqlite3
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Union

import numpy as np

from edge_mm.errors import IndexStoreError, InputError, UsageError

FORMAT_VERSION = 1
EMBED_DTYPE = "float16"
VECTORS_FILE = "vectors.f16"
META_FILE = "meta.sqlite"
LOCK_FILE = "writer.lock"
# Unit-norm inputs are expected (CLIP embeddings are L2-normalised); anything further off is a bug
# upstream (e.g. the projection without normalisation) that would silently skew cosine ranking.
NORM_TOLERANCE = 1e-2
ITEM_KEYS = frozenset({"content_hash", "path", "frame_time", "box", "source", "extra", "thumbnail"})
# A thumbnail is for a results page, not for re-embedding: 128 px JPEGs are 3-8 KiB; the cap stops a
# caller from filling the metadata database with full frames.
MAX_THUMBNAIL_BYTES = 32 << 10
_JPEG_MAGIC = b"\xff\xd8\xff"
# SQLite's limit on bound parameters is 32766 on current builds, 999 on old ones.
_SQL_CHUNK = 900

_SCHEMA = """
CREATE TABLE info (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE items (
    id INTEGER PRIMARY KEY,
    content_hash TEXT NOT NULL UNIQUE,
    path TEXT NOT NULL,
    frame_time REAL,
    box TEXT,
    source TEXT NOT NULL DEFAULT '',
    added_at REAL NOT NULL,
    extra TEXT NOT NULL DEFAULT '{}',
    deleted_at REAL,
    thumbnail BLOB
);
CREATE INDEX items_deleted ON items(deleted_at) WHERE deleted_at IS NOT NULL;
"""
# Columns added after format 1 was first released; a writer adds them to an older index.
_LATER_COLUMNS = {"deleted_at": "REAL", "thumbnail": "BLOB"}


def add_command(index_path: Union[str, Path]) -> str:
    """The command that creates an index at `index_path` (runnable once the CLIP artifact and inputs are filled in)."""
    return f"edge-mm-index add --index {index_path} --model CLIP_ARTIFACT IMAGES_OR_VIDEOS"


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """Which embedding model made an index's vectors; vectors of two models must never mix."""

    name: str
    spec_digest: str
    # Two checkpoints of one architecture (e.g. OpenAI and LAION ViT-B/32) share name and spec
    # digest but not embedding space; compared when both sides know it.
    weights_sha256: str = ""

    @classmethod
    def from_spec(cls, spec: Any) -> "ModelInfo":
        """From an edge_mm.spec.ModelSpec (the image tower's spec, which made the stored vectors)."""
        return cls(name=spec.name, spec_digest=spec.digest(), weights_sha256=spec.source_weights_sha256 or "")

    @classmethod
    def coerce(cls, value: Union["ModelInfo", Mapping[str, Any]]) -> "ModelInfo":
        if isinstance(value, ModelInfo):
            return value
        if isinstance(value, Mapping) and value.get("name") and value.get("spec_digest"):
            return cls(str(value["name"]), str(value["spec_digest"]), str(value.get("weights_sha256") or ""))
        raise UsageError(f"model_info must be a ModelInfo or a dict with name and spec_digest, got {value!r}")

    def describe(self) -> str:
        return f"{self.name!r} (spec {self.spec_digest[:12]})"

    def same_model(self, other: "ModelInfo") -> bool:
        if self.name != other.name or self.spec_digest != other.spec_digest:
            return False
        return not (self.weights_sha256 and other.weights_sha256 and self.weights_sha256 != other.weights_sha256)


COMPACT_DONE = "COMPACT_DONE"  # written last into a complete compacted index, before its renames


def compact_aside(path: Path, suffix: str) -> Path:
    return path.parent / f".{path.name}.{suffix}"


def recover_interrupted_compact(path: Union[str, Path]) -> None:
    """Finish or undo a compact (runtime/retrieval/compact.py) killed between its renames: with `path`
    missing, roll forward if the new index is complete, else back; delete leftovers once `path` is there."""
    path = Path(path)
    new, old = compact_aside(path, "compact"), compact_aside(path, "compact-old")
    if not path.exists() and old.is_dir():
        source = new if (new / COMPACT_DONE).is_file() else old
        try:
            os.rename(source, path)
        except OSError:
            if not path.exists():  # not a race with another opener that already did it
                raise IndexStoreError(
                    f"index {path} was being compacted and cannot be restored from {source}; rename it to {path}"
                ) from None
    if path.exists() and old.is_dir() and not new.exists():
        shutil.rmtree(old, ignore_errors=True)  # step 3 was killed before its cleanup


class _WriterLock:
    """An exclusive, non-blocking fcntl.flock on `writer.lock`; the holder's pid is written in it.

    The kernel drops the lock when its process dies, SIGKILL included, so a crash never leaves a
    stale lock behind (the pid in the file is then just overwritten).
    """

    def __init__(self, index_dir: Path) -> None:
        path = index_dir / LOCK_FILE
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(self._fd)
            raise IndexStoreError(
                f"index {index_dir} is already open for adding by process {holder}; "
                "wait for it to finish or stop it (searching it meanwhile is fine)"
            ) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class IndexStore:
    """One embedding index folder. `mode="r"` searches; `mode="a"` also adds (one writer at a time).

    Opening with `mode="a"` creates the index if `path` does not exist (then `dim` is required).
    `model_info` names the model whose embeddings are stored; it is required to add, optional to
    read, and must match the model the index was made with.
    """

    def __init__(
        self,
        path: Union[str, Path],
        dim: Optional[int] = None,
        model_info: Optional[Union[ModelInfo, Mapping[str, Any]]] = None,
        mode: str = "r",
    ) -> None:
        if mode not in ("r", "a"):
            raise UsageError(f"IndexStore mode must be 'r' (search) or 'a' (add), got {mode!r}")
        self.path = Path(path)
        self.mode = mode
        self._mutex = threading.RLock()
        self._lock: Optional[_WriterLock] = None
        self._db: Optional[sqlite3.Connection] = None
        self._vec_fd = -1
        self._mmap: Optional[np.ndarray] = None
        wanted = ModelInfo.coerce(model_info) if model_info is not None else None
        recover_interrupted_compact(self.path)

        if mode == "a":
            if wanted is None:
                raise UsageError(
                    f"adding to index {self.path} needs model_info (the model that made the vectors), "
                    "so embeddings of two models never mix"
                )
            if not self._looks_like_index():
                self._create(dim, wanted)
            self._lock = _WriterLock(self.path)
        elif not self.path.exists():
            raise IndexStoreError(f"no retrieval index at {self.path}; build one with `{add_command(self.path)}`")
        try:
            self._open(wanted, dim)
        except BaseException:
            self.close()
            raise

    # -- opening and creating -------------------------------------------------------------------
    def _looks_like_index(self) -> bool:
        if not self.path.exists():
            return False
        if not self.path.is_dir():
            raise IndexStoreError(f"{self.path} is a file, not an index folder; choose another index path")
        if (self.path / META_FILE).exists():
            return True
        if any(self.path.iterdir()):
            raise IndexStoreError(
                f"{self.path} is a non-empty folder without {META_FILE}, so not a retrieval index; choose another index path"
            )
        return False  # an empty folder: create the index in it

    def _create(self, dim: Optional[int], model: ModelInfo, info_extra: Optional[Mapping[str, str]] = None) -> None:
        if dim is None or int(dim) <= 0:
            raise UsageError(f"creating index {self.path} needs the embedding dimension (dim > 0), got {dim!r}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Build the whole folder aside and rename it in, so no reader ever sees half an index.
        # Unlike edge_mm.atomic.atomic_dir this never replaces an index that a racing writer
        # created meanwhile: rename onto a non-empty folder fails and we open theirs instead.
        tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", suffix=".part", dir=self.path.parent))
        try:
            os.chmod(tmp, 0o755)  # mkdtemp makes it private; an index is shared with readers
            (tmp / VECTORS_FILE).touch()
            db = sqlite3.connect(tmp / META_FILE, isolation_level=None)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript(_SCHEMA)
                info = {
                    "format": str(FORMAT_VERSION),
                    "dim": str(int(dim)),
                    "embed_dtype": EMBED_DTYPE,
                    "model_name": model.name,
                    "model_spec_digest": model.spec_digest,
                    "model_weights_sha256": model.weights_sha256,
                    # Lets derived files (e.g. a FAISS index) tell this index from a copy of another.
                    "index_uuid": os.urandom(16).hex(),
                    "created_at": repr(time.time()),
                    "deletions": "0",
                    **dict(info_extra or {}),
                }
                db.execute("BEGIN")
                db.executemany("INSERT INTO info(key, value) VALUES (?, ?)", sorted(info.items()))
                db.execute("COMMIT")
            finally:
                db.close()
            for name in (VECTORS_FILE, META_FILE):
                with open(tmp / name, "rb+") as fh:
                    os.fsync(fh.fileno())
            try:
                os.rename(tmp, self.path)
            except OSError:
                if not (self.path / META_FILE).exists():
                    raise IndexStoreError(
                        f"cannot create index folder {self.path}; check the path and permissions"
                    ) from None
            _fsync_dir(self.path.parent)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _connect(self) -> sqlite3.Connection:
        meta = self.path / META_FILE
        if not meta.is_file():
            raise IndexStoreError(f"{self.path} is not a retrieval index (no {META_FILE}); check the index path")
        if self.mode == "a":
            db = sqlite3.connect(meta, isolation_level=None, timeout=30.0, check_same_thread=False)
            # FULL makes each commit durable across power loss too, not only across a crash.
            db.execute("PRAGMA synchronous=FULL")
        else:
            uri = f"file:{urllib.parse.quote(str(meta.resolve()))}?mode=ro"
            db = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=30.0, check_same_thread=False)
        return db

    def _open(self, wanted: Optional[ModelInfo], dim: Optional[int]) -> None:
        try:
            self._db = self._connect()
            info = dict(self._db.execute("SELECT key, value FROM info").fetchall())
            if self._db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                raise IndexStoreError(f"index {self.path} is not in WAL mode; it was not made by edge-mm, rebuild it")
            committed = self._committed_rows()
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(items)")}
            if self.mode == "a":
                for name, kind in _LATER_COLUMNS.items():
                    if name not in columns:
                        self._db.execute(f"ALTER TABLE items ADD COLUMN {name} {kind}")
                columns |= set(_LATER_COLUMNS)
            self._columns = columns
        except sqlite3.DatabaseError as exc:
            raise IndexStoreError(
                f"index metadata {self.path / META_FILE} is corrupt or unreadable ({exc}); rebuild the index at a new path"
            ) from None
        try:
            fmt = int(info["format"])
            self.dim = int(info["dim"])
            self._info = info
            self.model_info = ModelInfo(
                info["model_name"], info["model_spec_digest"], info.get("model_weights_sha256", "")
            )
        except (KeyError, ValueError) as exc:
            raise IndexStoreError(
                f"index {self.path} has a damaged info table ({exc!r}); rebuild the index at a new path"
            ) from None
        if fmt != FORMAT_VERSION or info.get("embed_dtype") != EMBED_DTYPE:
            raise IndexStoreError(
                f"index {self.path} has format {fmt} / {info.get('embed_dtype')}, this edge-mm reads format "
                f"{FORMAT_VERSION} / {EMBED_DTYPE}; rebuild the index with this version"
            )
        if wanted is not None and not wanted.same_model(self.model_info):
            if wanted.name == self.model_info.name and wanted.spec_digest == self.model_info.spec_digest:
                # Same name and spec: only the weights differ, which a spec digest alone cannot show.
                raise IndexStoreError(
                    f"index {self.path} holds embeddings of {self.model_info.name!r} with other weights "
                    f"(sha256 {self.model_info.weights_sha256[:12]}, this artifact's {wanted.weights_sha256[:12]}); "
                    "search it with the artifact that made it, or use a new index path for these weights"
                )
            raise IndexStoreError(
                f"index {self.path} holds embeddings of model {self.model_info.describe()}, not {wanted.describe()}; "
                "use a new index path for the other model"
            )
        if dim is not None and int(dim) != self.dim:
            raise IndexStoreError(
                f"index {self.path} holds {self.dim}-d vectors, not {int(dim)}-d; use a new index path"
            )

        vec_path = self.path / VECTORS_FILE
        if not vec_path.is_file():
            raise IndexStoreError(
                f"index {self.path} lacks {VECTORS_FILE}; the index is damaged, rebuild it at a new path"
            )
        self._vec_fd = os.open(vec_path, os.O_RDWR if self.mode == "a" else os.O_RDONLY)
        size = os.fstat(self._vec_fd).st_size
        if size < committed * self.row_bytes:
            raise IndexStoreError(
                f"index {self.path}: {VECTORS_FILE} holds {size // self.row_bytes} rows but {committed} are committed; "
                "the index is damaged, rebuild it at a new path"
            )
        if self.mode == "a" and size > committed * self.row_bytes:
            # The tail of an add that died before its commit: nothing refers to it.
            self._truncate_vectors(committed)

    # -- properties -------------------------------------------------------------------------------
    @property
    def row_bytes(self) -> int:
        return self.dim * 2

    @property
    def index_uuid(self) -> str:
        return self._info["index_uuid"]

    @property
    def info(self) -> Dict[str, str]:
        """The info table as stored: format, dim, embed_dtype, model_*, index_uuid, created_at."""
        return dict(self._info)

    def _committed_rows(self) -> int:
        # Ids are dense row numbers from 0 and are never deleted, so MAX(id)+1 is the count, and
        # reading it off the rowid b-tree is O(log n) where COUNT(*) would scan.
        assert self._db is not None
        return int(self._db.execute("SELECT COALESCE(MAX(id) + 1, 0) FROM items").fetchone()[0])

    def __len__(self) -> int:
        with self._mutex:
            self._check_open()
            return self._committed_rows()

    def _check_open(self) -> None:
        if self._db is None:
            raise IndexStoreError(f"index {self.path} is closed; open it again")

    # -- reading ----------------------------------------------------------------------------------
    def vectors(self) -> np.ndarray:
        """A read-only (n, dim) float16 memory map of the committed rows (n = len(self) now).

        The map stays valid while the index grows: rows are only appended, and the file is never
        cut below the committed rows.
        """
        with self._mutex:
            n = len(self)
            if self._mmap is None or self._mmap.shape[0] != n:
                if n == 0:
                    self._mmap = np.empty((0, self.dim), dtype=np.float16)
                else:
                    self._mmap = np.memmap(self.path / VECTORS_FILE, dtype=np.float16, mode="r", shape=(n, self.dim))
            return self._mmap

    def has(self, content_hash: str) -> bool:
        """Whether `content_hash` is indexed and not removed (a removed one is embedded again on re-add)."""
        with self._mutex:
            self._check_open()
            row = self._db.execute(
                f"SELECT {self._deleted_col} FROM items WHERE content_hash = ?", (content_hash,)
            ).fetchone()
            return row is not None and row[0] is None

    @property
    def _deleted_col(self) -> str:
        # An index made before tombstones, opened read-only, has no such column: nothing is deleted.
        return "deleted_at" if "deleted_at" in self._columns else "NULL"

    def deletions(self) -> int:
        """How many remove() calls have committed (with revivals); searchers refresh their skip list when it moves."""
        with self._mutex:
            self._check_open()
            row = self._db.execute("SELECT value FROM info WHERE key = 'deletions'").fetchone()
            return int(row[0]) if row else 0

    def deleted_ids(self) -> np.ndarray:
        """Sorted int64 ids of removed (tombstoned) rows; every search path skips them."""
        with self._mutex:
            self._check_open()
            if "deleted_at" not in self._columns:
                return np.empty(0, dtype=np.int64)
            rows = self._db.execute("SELECT id FROM items WHERE deleted_at IS NOT NULL ORDER BY id").fetchall()
            return np.array([r[0] for r in rows], dtype=np.int64)

    def live_count(self) -> int:
        """Rows that searches can return: committed minus removed."""
        with self._mutex:
            return len(self) - int(self.deleted_ids().size)

    def thumbnail(self, item_id: int) -> Optional[bytes]:
        """The JPEG thumbnail stored with `item_id`, or None if it was added without one."""
        with self._mutex:
            self._check_open()
            if "thumbnail" not in self._columns:
                return None
            row = self._db.execute("SELECT thumbnail FROM items WHERE id = ?", (int(item_id),)).fetchone()
        if row is None:
            raise IndexStoreError(f"index {self.path} has no item with id {item_id}; use ids returned by add or search")
        return bytes(row[0]) if row[0] is not None else None

    def select_ids(self, path_glob: Optional[str] = None, before: Optional[float] = None) -> List[int]:
        """Live ids whose path matches `path_glob` (SQLite GLOB: * ? [..], case-sensitive) and/or that
        were added before `before` (seconds since the epoch). Both given: both must hold."""
        if path_glob is None and before is None:
            raise UsageError("select_ids needs path_glob and/or before")
        where, params = [f"{self._deleted_col} IS NULL"], []
        if path_glob is not None:
            where.append("path GLOB ?")
            params.append(str(path_glob))
        if before is not None:
            where.append("added_at < ?")
            params.append(float(before))
        with self._mutex:
            self._check_open()
            cur = self._db.execute(f"SELECT id FROM items WHERE {' AND '.join(where)} ORDER BY id", params)
            return [int(r[0]) for r in cur]

    def remove(self, ids: Iterable[int]) -> int:
        """Tombstone `ids` in one transaction; returns how many were live. Unknown ids raise IndexStoreError."""
        if self._lock is None:
            raise UsageError(f"index {self.path} was opened for searching; open it with mode='a' to remove items")
        wanted = sorted({int(i) for i in ids})
        with self._mutex:
            self._check_open()
            n = self._committed_rows()
            bad = [i for i in wanted if not 0 <= i < n]
            if bad:
                raise IndexStoreError(
                    f"index {self.path} has no item with id {bad[0]} (it holds ids 0..{n - 1}); "
                    "use ids shown by search --json"
                )
            return self._set_deleted(wanted, time.time())

    def _set_deleted(self, ids: List[int], when: Optional[float]) -> int:
        """Tombstone (when = a time) or revive (when = None) ids; bumps `deletions` in the same transaction."""
        db = self._db
        changed = 0
        with self._write_transaction():
            for start in range(0, len(ids), _SQL_CHUNK):
                part = ids[start : start + _SQL_CHUNK]
                marks = ",".join("?" * len(part))
                state = "IS NULL" if when is not None else "IS NOT NULL"
                changed += db.execute(
                    f"UPDATE items SET deleted_at = ? WHERE id IN ({marks}) AND deleted_at {state}", [when, *part]
                ).rowcount
            if changed:
                db.execute(
                    "INSERT INTO info(key, value) VALUES ('deletions', '1') "
                    "ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1"
                )
        return changed

    def ids_for(self, content_hashes: Sequence[str]) -> Dict[str, int]:
        """The ids of those hashes that are indexed (removed ones included)."""
        found: Dict[str, int] = {}
        unique = list(dict.fromkeys(content_hashes))
        with self._mutex:
            self._check_open()
            for start in range(0, len(unique), _SQL_CHUNK):
                part = unique[start : start + _SQL_CHUNK]
                marks = ",".join("?" * len(part))
                for h, i in self._db.execute(
                    f"SELECT content_hash, id FROM items WHERE content_hash IN ({marks})", part
                ):
                    found[h] = int(i)
        return found

    def items(self, ids: Iterable[int]) -> List[Dict[str, Any]]:
        """Metadata of `ids`, in the order given; an id that is not indexed raises IndexStoreError."""
        wanted = [int(i) for i in np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids).ravel()]
        rows: Dict[int, Dict[str, Any]] = {}
        unique = list(dict.fromkeys(wanted))
        with self._mutex:
            self._check_open()
            for start in range(0, len(unique), _SQL_CHUNK):
                part = unique[start : start + _SQL_CHUNK]
                marks = ",".join("?" * len(part))
                thumb = "thumbnail IS NOT NULL" if "thumbnail" in self._columns else "0"
                cur = self._db.execute(
                    f"SELECT id, content_hash, path, frame_time, box, source, added_at, extra, {self._deleted_col}, "
                    f"{thumb} FROM items WHERE id IN ({marks})",
                    part,
                )
                for r in cur:
                    rows[int(r[0])] = {
                        "id": int(r[0]),
                        "content_hash": r[1],
                        "path": r[2],
                        "frame_time": r[3],
                        "box": json.loads(r[4]) if r[4] is not None else None,
                        "source": r[5],
                        "added_at": r[6],
                        "extra": json.loads(r[7]),
                        "deleted_at": r[8],
                        "has_thumbnail": bool(r[9]),
                    }
        missing = [i for i in unique if i not in rows]
        if missing:
            raise IndexStoreError(
                f"index {self.path} has no item with id {missing[0]} (it holds ids 0..{len(self) - 1}); "
                "use ids returned by add or search"
            )
        return [rows[i] for i in wanted]

    # -- adding -----------------------------------------------------------------------------------
    def add(self, vectors: np.ndarray, items: Sequence[Mapping[str, Any]]) -> List[int]:
        """Add unit-norm `vectors` (N, dim) with one metadata dict per row, in one transaction.

        An item whose content_hash is already indexed (or repeats within the batch) is skipped and
        its existing id is returned in its place, so re-running an interrupted ingest is safe; a
        removed one is revived (same content, same vector). An item may carry "thumbnail": JPEG
        bytes (at most MAX_THUMBNAIL_BYTES), committed with it. Returns the id of every given item.
        """
        if self._lock is None:
            raise UsageError(f"index {self.path} was opened for searching; open it with mode='a' to add")
        block = _check_vectors(vectors, self.dim, len(items))
        rows = [_row_from_item(i, item) for i, item in enumerate(items)]
        with self._mutex:
            self._check_open()
            start = self._committed_rows()
            existing = self.ids_for([r[0] for r in rows])
            ids: List[int] = []
            fresh: List[int] = []  # positions in the batch that become new rows
            for pos, row in enumerate(rows):
                known = existing.get(row[0])
                if known is None:
                    known = existing[row[0]] = start + len(fresh)
                    fresh.append(pos)
                ids.append(known)
            revive = sorted({ids[p] for p in range(len(rows)) if ids[p] < start} & set(self.deleted_ids().tolist()))
            if revive:
                self._set_deleted(revive, None)
            if not fresh:
                return ids
            self._append_vectors(start, block[fresh].astype(np.float16))
            try:
                self._insert_rows(start, [rows[p] for p in fresh])
            except BaseException:
                # Drop what this failed add wrote; whatever did commit stays (the count decides).
                try:
                    self._truncate_vectors(self._committed_rows())
                except (OSError, sqlite3.Error):
                    pass  # the next writer's open cuts the tail instead
                raise
            return ids

    def _append_vectors(self, start: int, block: np.ndarray) -> None:
        """Write rows start.. past the committed ones and make them durable before any commit."""
        offset = start * self.row_bytes
        os.ftruncate(self._vec_fd, offset)  # drop any tail left by an earlier failed add
        data = memoryview(np.ascontiguousarray(block)).cast("B")
        while data:
            written = os.pwrite(self._vec_fd, data, offset)
            data, offset = data[written:], offset + written
        os.fsync(self._vec_fd)

    def _insert_rows(self, start: int, rows: List[tuple], added_at: Optional[Sequence[float]] = None) -> None:
        """Commit the metadata of rows start..; after this returns they are indexed."""
        now = time.time()
        db = self._db
        with self._write_transaction():
            db.executemany(
                "INSERT INTO items(id, content_hash, path, frame_time, box, source, added_at, extra, thumbnail) "
                "VALUES (?,?,?,?,?,?,?,?,?)",
                [
                    (start + i, h, p, t, b, s, now if added_at is None else added_at[i], e, th)
                    for i, (h, p, t, b, s, e, th) in enumerate(rows)
                ],
            )

    @contextlib.contextmanager
    def _write_transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE ... COMMIT; on any error a rollback, and SQLite's errors as one IndexStoreError."""
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            yield
            db.execute("COMMIT")
        except BaseException as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise IndexStoreError(
                    f"could not commit to index {self.path} ({exc}); check disk space and permissions"
                ) from None
            raise

    def _truncate_vectors(self, rows: int) -> None:
        os.ftruncate(self._vec_fd, rows * self.row_bytes)
        os.fsync(self._vec_fd)

    # -- closing ----------------------------------------------------------------------------------
    def close(self) -> None:
        with self._mutex:
            self._mmap = None
            if self._db is not None:
                self._db.close()
                self._db = None
            if self._vec_fd >= 0:
                os.close(self._vec_fd)
                self._vec_fd = -1
            if self._lock is not None:
                self._lock.release()
                self._lock = None

    def __enter__(self) -> "IndexStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        state = "closed" if self._db is None else f"{len(self)} items"
        return (
            f"IndexStore({str(self.path)!r}, {self.dim}-d, model={self.model_info.name!r}, mode={self.mode!r}, {state})"
        )


def _check_vectors(vectors: Any, dim: int, count: int) -> np.ndarray:
    arr = np.asarray(vectors)
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise InputError(f"vectors must have shape (N, {dim}), got {arr.shape}; embed with the index's model")
    if arr.shape[0] != count:
        raise InputError(f"got {arr.shape[0]} vectors but {count} items; pass one metadata dict per vector")
    if not np.issubdtype(arr.dtype, np.floating):
        raise InputError(f"vectors must be floating point, got {arr.dtype}")
    arr = arr.astype(np.float32, copy=False)
    if not np.isfinite(arr).all():
        raise InputError("vectors contain NaN or inf; check the embedding model's output")
    norms = np.linalg.norm(arr, axis=1)
    bad = np.flatnonzero(np.abs(norms - 1.0) > NORM_TOLERANCE)
    if bad.size:
        raise InputError(
            f"vector {bad[0]} has L2 norm {norms[bad[0]]:.4f}, not 1; L2-normalise embeddings before adding them"
        )
    return arr


def _row_from_item(index: int, item: Mapping[str, Any]) -> tuple:
    """Validate one metadata dict; return (content_hash, path, frame_time, box_json, source, extra_json, thumbnail)."""
    if not isinstance(item, Mapping):
        raise InputError(f"item {index} must be a dict, got {type(item).__name__}")
    unknown = set(item) - ITEM_KEYS
    if unknown:
        raise InputError(f"item {index} has unknown keys {sorted(unknown)}; allowed: {sorted(ITEM_KEYS)}")
    content_hash, path = item.get("content_hash"), item.get("path")
    if not isinstance(content_hash, str) or not content_hash:
        raise InputError(f"item {index} needs a non-empty string content_hash, got {content_hash!r}")
    if not isinstance(path, (str, os.PathLike)):
        raise InputError(f"item {index} needs a path (str), got {path!r}")
    frame_time = item.get("frame_time")
    if frame_time is not None:
        try:
            frame_time = float(frame_time)
        except (TypeError, ValueError):
            raise InputError(f"item {index}: frame_time must be a number of seconds, got {frame_time!r}") from None
        if not math.isfinite(frame_time):
            raise InputError(f"item {index}: frame_time must be finite, got {frame_time!r}")
    box = item.get("box")
    if box is not None:
        try:
            x0, y0, x1, y1 = (float(v) for v in box)
        except (TypeError, ValueError):
            raise InputError(f"item {index}: box must be 4 numbers x0, y0, x1, y1, got {box!r}") from None
        if not all(math.isfinite(v) for v in (x0, y0, x1, y1)) or x1 < x0 or y1 < y0:
            raise InputError(f"item {index}: box must be finite with x0 <= x1 and y0 <= y1, got {box!r}")
        box = json.dumps([x0, y0, x1, y1])
    source = item.get("source") or ""
    if not isinstance(source, str):
        raise InputError(f"item {index}: source must be a string, got {source!r}")
    extra = item.get("extra") or {}
    if not isinstance(extra, Mapping):
        raise InputError(f"item {index}: extra must be a dict, got {type(extra).__name__}")
    try:
        extra_json = json.dumps(dict(extra), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InputError(f"item {index}: extra must be JSON-serialisable ({exc})") from None
    thumbnail = item.get("thumbnail")
    if thumbnail is not None:
        if not isinstance(thumbnail, (bytes, bytearray, memoryview)) or not bytes(thumbnail[:3]) == _JPEG_MAGIC:
            raise InputError(f"item {index}: thumbnail must be JPEG bytes (runtime.retrieval.thumbnail.make_thumbnail)")
        if len(thumbnail) > MAX_THUMBNAIL_BYTES:
            raise InputError(
                f"item {index}: thumbnail is {len(thumbnail)} bytes, over the {MAX_THUMBNAIL_BYTES}-byte cap; "
                "make it with runtime.retrieval.thumbnail.make_thumbnail"
            )
        thumbnail = sqlite3.Binary(bytes(thumbnail))
    return content_hash, os.fspath(path), frame_time, box, source, extra_json, thumbnail
