"""Exact nearest-neighbour search over an IndexStore (torch-free, numpy only).

Scores are inner products of unit-norm queries with the stored unit-norm vectors, i.e. cosine
similarity. The fp16 rows are converted to float32 one chunk at a time and multiplied with BLAS,
so memory stays at one chunk; a float32 copy of the whole index can be kept in RAM instead when it
is small enough (`cache_bytes`), which removes the conversion from every query.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from edge_mm.errors import InputError, UsageError
from runtime.retrieval.store import IndexStore

# 8192 x 512 float32 = 16 MiB: large enough for BLAS to run at speed, small enough to stay in cache.
DEFAULT_CHUNK_ROWS = 8192
# Keep a float32 copy in RAM up to this size (256 k 512-d vectors); beyond it stream fp16 chunks.
DEFAULT_CACHE_BYTES = 512 << 20


def prepare_queries(queries: np.ndarray, dim: int) -> np.ndarray:
    """Check and L2-normalise queries; a single (dim,) query becomes (1, dim)."""
    q = np.asarray(queries)
    if q.ndim == 1:
        q = q[None, :]
    if q.ndim != 2 or q.shape[1] != dim:
        raise InputError(
            f"queries must have shape (Q, {dim}) or ({dim},), got {np.shape(queries)}; embed with the index's model"
        )
    if not np.issubdtype(q.dtype, np.floating):
        raise InputError(f"queries must be floating point, got {q.dtype}")
    q = np.ascontiguousarray(q, dtype=np.float32)
    norms = np.linalg.norm(q, axis=1, keepdims=True)
    if not np.isfinite(q).all() or (norms == 0).any():
        raise InputError("queries contain NaN, inf or an all-zero vector; check the embedding model's output")
    return q / norms


def check_k(k: int) -> int:
    if int(k) != k or k < 1:
        raise InputError(f"k must be a positive integer, got {k!r}")
    return int(k)


def sort_topk(scores: np.ndarray, ids: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Order each row by score, highest first, ties by lower id (deterministic output)."""
    order = np.lexsort((ids, -scores), axis=-1)
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(ids, order, axis=1)


def exact_search(
    vectors: np.ndarray,
    queries: np.ndarray,
    k: int,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    id_offset: int = 0,
    exclude: Optional[np.ndarray] = None,
) -> Tuple[np.ndarray, np.ndarray]:
    """Top-k rows of `vectors` (n, D; fp16 or fp32, e.g. a memmap) by inner product with each query.

    `queries` must already be float32 and unit-norm (see prepare_queries). Returns (scores, ids),
    both (Q, min(k, n)), best first; ids are row numbers plus `id_offset`. Ids in `exclude` (sorted,
    e.g. removed rows) are never returned; slots left empty hold id -1 and score -inf.
    """
    k = check_k(k)
    n = vectors.shape[0]
    nq = queries.shape[0]
    kk = min(k, n)
    best_s = np.full((nq, kk), -np.inf, dtype=np.float32)
    best_i = np.full((nq, kk), -1, dtype=np.int64)
    if kk == 0:
        return best_s, best_i
    convert = vectors.dtype != np.float32
    buf = np.empty((min(chunk_rows, n), vectors.shape[1]), dtype=np.float32) if convert else None
    for start in range(0, n, chunk_rows):
        stop = min(start + chunk_rows, n)
        if convert:
            block = buf[: stop - start]
            np.copyto(block, vectors[start:stop])  # fp16 -> fp32 into a reused buffer
        else:
            block = vectors[start:stop]
        sims = queries @ block.T  # (Q, c)
        if exclude is not None and exclude.size:
            lo, hi = np.searchsorted(exclude, [start + id_offset, stop + id_offset])
            sims[:, exclude[lo:hi] - (start + id_offset)] = -np.inf
        if stop - start > kk:
            part = np.argpartition(sims, -kk, axis=1)[:, -kk:]
            cand_s = np.take_along_axis(sims, part, axis=1)
        else:
            part = np.broadcast_to(np.arange(stop - start), (nq, stop - start))
            cand_s = sims
        # Merge this chunk's candidates with the running best k.
        all_s = np.concatenate([best_s, cand_s], axis=1)
        all_i = np.concatenate([best_i, part + (start + id_offset)], axis=1)
        keep = np.argpartition(all_s, -kk, axis=1)[:, -kk:]
        best_s = np.take_along_axis(all_s, keep, axis=1)
        best_i = np.take_along_axis(all_i, keep, axis=1)
    best_i = np.where(np.isfinite(best_s), best_i, -1)
    return sort_topk(best_s, best_i)


def merge_topk(
    a: Tuple[np.ndarray, np.ndarray], b: Tuple[np.ndarray, np.ndarray], k: int
) -> Tuple[np.ndarray, np.ndarray]:
    """Merge two (scores, ids) results of the same queries into one top-k; ids -1 (none found) go last."""
    scores = np.concatenate([a[0], b[0]], axis=1)
    ids = np.concatenate([a[1], b[1]], axis=1)
    scores = np.where(ids < 0, -np.inf, scores).astype(np.float32)
    kk = min(k, ids.shape[1])
    order = np.lexsort((ids, -scores), axis=-1)[:, :kk]
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(ids, order, axis=1)


class ExactIndex:
    """Exact cosine search over a store; sees rows added after it was made (it reads the count each call)."""

    name = "exact"

    def __init__(
        self,
        store: IndexStore,
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
        cache_bytes: Optional[int] = DEFAULT_CACHE_BYTES,
    ) -> None:
        if chunk_rows < 1:
            raise UsageError(f"chunk_rows must be >= 1, got {chunk_rows}")
        self.store = store
        self.chunk_rows = int(chunk_rows)
        self.cache_bytes = 0 if cache_bytes is None else int(cache_bytes)
        self._cache = np.empty((0, store.dim), dtype=np.float32)
        self._deleted = np.empty(0, dtype=np.int64)
        self._deletions_seen = -1

    def _deleted_ids(self) -> np.ndarray:
        """Removed rows, re-read only when the store's deletion counter moved."""
        seen = self.store.deletions()
        if seen != self._deletions_seen:
            self._deleted, self._deletions_seen = self.store.deleted_ids(), seen
        return self._deleted

    def _rows(self) -> np.ndarray:
        """The committed rows: the float32 cache if it fits the budget, else the fp16 memmap."""
        vectors = self.store.vectors()
        n = vectors.shape[0]
        if n * self.store.dim * 4 > self.cache_bytes:
            self._cache = np.empty((0, self.store.dim), dtype=np.float32)
            return vectors
        if self._cache.shape[0] != n:  # rows are only appended: convert just the new ones
            self._cache = np.concatenate([self._cache, vectors[self._cache.shape[0] : n].astype(np.float32)])
        return self._cache

    def search(self, queries: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
        """(scores, ids) of the k most similar items per query, best first; (Q, min(k, len(store)))."""
        q = prepare_queries(queries, self.store.dim)
        return exact_search(self._rows(), q, k, self.chunk_rows, exclude=self._deleted_ids())


def recall_at_k(found_ids: np.ndarray, true_ids: np.ndarray, k: int) -> float:
    """Mean fraction of the true top-k ids that an approximate search returned in its top k."""
    hits = [
        len(set(f[:k].tolist()) & set(t[:k].tolist())) / min(k, len(t)) for f, t in zip(found_ids, true_ids) if len(t)
    ]
    return float(np.mean(hits)) if hits else 1.0
