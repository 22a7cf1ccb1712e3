"""Approximate search over an IndexStore with a usearch HNSW graph, re-ranked with the stored fp16 rows.

Why usearch (bench/bench_search.py, README "Retrieval"): in the first, lightly loaded measurement
(100k, one thread) it was within 10% of FAISS HNSW-SQ8 in latency and recall, built 3x faster,
keeps int8 codes (512 B per 512-d vector plus the graph), adds incrementally, and ships manylinux
aarch64 wheels (Jetson). Later measurements under heavier load (100k and 200k) favour FAISS
HNSW-SQ8 (higher recall at the same ef, 1.5x lower p50, same memory): the library is contained in
this module, so a switch touches nothing else. The graph finds `candidates` rows with int8 codes; their fp16 vectors are read
from the store's memmap and re-scored exactly, so quantisation never decides the final order
(text->image queries suffer most from it: clip-retrieval #76).

The graph is derived data: `graph-<index uuid>.usearch` beside the store, keys = row ids 0..n-1.
The file names the index it belongs to and itself says how many rows it covers (its size), so
there is no sidecar to disagree with it. Opening:

- a graph of this index covering n <= committed rows: loaded, then extended with rows n.. (adds
  are incremental: no rebuild);
- missing, unreadable, of another shape, or claiming rows the store has not committed: rebuilt
  from the store with a progress bar;
- rows committed after the graph was brought up to date are searched exactly and merged, and the
  graph is extended in memory once that tail is long, so no answer comes from a stale graph;
- removed (tombstoned) rows are filtered out of the candidates before re-ranking.

Saves go to a temporary file, fsync'ed, then renamed over the old graph: a kill leaves the old
graph or the new one, each valid for the rows it covers.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any, Optional, Tuple

import numpy as np
from tqdm import tqdm

from edge_mm.atomic import atomic_path
from edge_mm.errors import BackendError, IndexStoreError, UsageError
from runtime.retrieval.search import check_k, exact_search, merge_topk, prepare_queries, sort_topk
from runtime.retrieval.store import IndexStore

log = logging.getLogger("edge_mm.runtime.ann")

GRAPH_PREFIX = "graph-"
GRAPH_SUFFIX = ".usearch"
# Measured on clustered 512-d data, one query thread, 40 re-ranked candidates (bench/bench_search.py,
# README "Retrieval"). With M 16 / ef_construction 64, recall@10 fell with size: 0.996 at 100k,
# 0.941 at 200k, 0.356 at 1M (ef 128). M 32 / ef_construction 200 holds it at 1M: 0.948 / 0.999 at
# ef 64 / 128 (1.5 / 2.3 ms on a 16-core host's one thread), 788 B/vector, a 3.4x slower build.
DEFAULT_CONNECTIVITY = 32
DEFAULT_EXPANSION_ADD = 200
DEFAULT_EXPANSION_SEARCH = 128
DEFAULT_CANDIDATES = 40
DEFAULT_DTYPE = "i8"
ADD_CHUNK_ROWS = 32768
# Past this many rows newer than the graph, search() adds them to the graph (in memory) first.
EXTEND_AFTER_ROWS = 4096


def import_usearch() -> Any:
    try:
        # Measured here (faiss-cpu 1.15, usearch 2.26, x86_64): with usearch loaded first, FAISS's
        # IVF training segfaults in the same process (a shared-library symbol clash, like the
        # torch-before-faiss one in faiss #2555). Loading faiss first, when it is installed, is safe.
        import faiss  # noqa: F401, PLC0415
    except ImportError:
        pass
    try:
        from usearch.index import Index  # noqa: PLC0415 - optional, imported only when a graph is used
    except ImportError:
        raise BackendError(
            "approximate search needs the usearch package: pip install 'edge-mm[retrieval]' (or search with --exact)"
        ) from None
    return Index


def graph_path(store: IndexStore) -> Path:
    return store.path / f"{GRAPH_PREFIX}{store.index_uuid}{GRAPH_SUFFIX}"


class GraphIndex:
    """HNSW search over `store`, same API as ExactIndex: `search(queries, k) -> (scores, ids)`."""

    name = "ann"

    def __init__(
        self,
        store: IndexStore,
        connectivity: int = DEFAULT_CONNECTIVITY,
        expansion_add: int = DEFAULT_EXPANSION_ADD,
        expansion_search: int = DEFAULT_EXPANSION_SEARCH,
        candidates: int = DEFAULT_CANDIDATES,
        dtype: str = DEFAULT_DTYPE,
        threads: int = 1,
        save: bool = True,
        progress: Optional[bool] = None,
    ) -> None:
        if min(connectivity, expansion_add, expansion_search, candidates, threads) < 1:
            raise UsageError("connectivity, expansion_add, expansion_search, candidates and threads must be >= 1")
        self._Index = import_usearch()
        self.store = store
        self.connectivity = int(connectivity)
        self.expansion_add = int(expansion_add)
        self.expansion_search = int(expansion_search)
        self.candidates = int(candidates)
        self.dtype = dtype
        self.threads = int(threads)
        self.save_to_disk = save
        self.progress = progress
        self.path = graph_path(store)
        self.graph: Any = None
        self.last_action = "none"  # loaded | extended | built: what refresh() did, for logs and tests
        self._mutex = threading.RLock()
        self._deleted = np.empty(0, dtype=np.int64)
        self._deletions_seen = -1
        self.refresh()

    # -- keeping the graph up to date ----------------------------------------------------------------
    def refresh(self) -> str:
        """Bring the graph up to the store's committed rows (load, extend or rebuild), save if it changed."""
        with self._mutex:
            rows = len(self.store)
            graph = self._load(rows)
            if graph is None:
                self.graph = self._new_graph()
                self._add_rows(0, rows, "building search graph")
                self.last_action = "built"
            else:
                self.graph = graph
                self.last_action = "loaded"
                if len(graph) < rows:
                    self._add_rows(len(graph), rows, "extending search graph")
                    self.last_action = "extended"
            self.graph.expansion_search = self.expansion_search
            if self.last_action != "loaded" and self.save_to_disk:
                try:
                    self.save()
                except IndexStoreError as exc:  # a read-only index folder is still searchable
                    log.warning("%s; searching with the graph in memory", exc)
            return self.last_action

    def _new_graph(self) -> Any:
        return self._Index(
            ndim=self.store.dim,
            metric="ip",
            dtype=self.dtype,
            connectivity=self.connectivity,
            expansion_add=self.expansion_add,
            expansion_search=self.expansion_search,
        )

    def _load(self, rows: int) -> Any:
        """The saved graph if it is this index's, of the wanted shape, and covers rows 0..n-1 (n <= rows)."""
        if not self.path.is_file():
            return None
        try:
            graph = self._Index.restore(str(self.path))
        except (ValueError, RuntimeError, OSError):
            return None  # damaged: rebuilt from the store, which is the truth
        if graph is None:
            return None
        n = len(graph)
        shape_ok = (
            graph.ndim == self.store.dim
            and graph.connectivity == self.connectivity
            and str(graph.dtype).lower().endswith(self.dtype.lower())
            and str(graph.metric).lower().endswith("ip")
        )
        keys_ok = n <= rows and (n == 0 or ((n - 1) in graph and n not in graph))
        if not (shape_ok and keys_ok):
            return None
        if n and not self._same_vector(graph, n - 1):
            return None
        return graph

    def _same_vector(self, graph: Any, key: int) -> bool:
        """The last row the graph covers holds the store's vector (a graph of other content is rejected)."""
        stored = np.asarray(self.store.vectors()[key], dtype=np.float32)
        got = np.asarray(graph.get(key), dtype=np.float32).ravel()
        if got.shape != stored.shape:
            return False
        norm = float(np.linalg.norm(got))
        # int8 codes of a 512-d unit vector keep cosine ~0.998 with it; another row is far below.
        return norm > 0 and float(got @ stored) / norm > 0.98

    def _add_rows(self, start: int, stop: int, label: str) -> None:
        if stop <= start:
            return
        vectors = self.store.vectors()
        show = self.progress if self.progress is not None else stop - start >= 50_000
        with tqdm(total=stop - start, desc=label, unit="vec", disable=not show) as bar:
            for lo in range(start, stop, ADD_CHUNK_ROWS):
                hi = min(lo + ADD_CHUNK_ROWS, stop)
                block = np.ascontiguousarray(vectors[lo:hi], dtype=np.float32)
                self.graph.add(np.arange(lo, hi, dtype=np.uint64), block, threads=self.threads)
                bar.update(hi - lo)

    def save(self) -> None:
        """Write the graph atomically (temp file, fsync, rename) and drop graphs of other indexes."""
        with self._mutex:
            try:
                with atomic_path(self.path) as tmp:
                    self.graph.save(str(tmp))
                    with open(tmp, "rb") as fh:
                        os.fsync(fh.fileno())
            except OSError as exc:
                raise IndexStoreError(
                    f"cannot save the search graph beside {self.store.path} ({exc}); make the folder writable or pass save=False"
                ) from None
        for stale in self.store.path.glob(f"{GRAPH_PREFIX}*{GRAPH_SUFFIX}"):
            if stale != self.path:
                stale.unlink(missing_ok=True)

    @property
    def covered(self) -> int:
        return len(self.graph)

    # -- searching ------------------------------------------------------------------------------------
    def _deleted_ids(self) -> np.ndarray:
        seen = self.store.deletions()
        if seen != self._deletions_seen:
            self._deleted, self._deletions_seen = self.store.deleted_ids(), seen
        return self._deleted

    def search(self, queries: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
        """(scores, ids) of the k best live items per query, best first; (Q, min(k, len(store))).

        Slots with nothing found (fewer live items than k) hold id -1 and score -inf.
        """
        k = check_k(k)
        q = prepare_queries(queries, self.store.dim)
        with self._mutex:
            rows = len(self.store)
            if rows - self.covered >= EXTEND_AFTER_ROWS:
                self._add_rows(self.covered, rows, "extending search graph")
            covered = self.covered
            deleted = self._deleted_ids()
            kk = min(k, rows)
            scores = np.full((q.shape[0], kk), -np.inf, dtype=np.float32)
            ids = np.full((q.shape[0], kk), -1, dtype=np.int64)
            if covered and kk:
                want = min(covered, max(self.candidates, kk) + int(np.searchsorted(deleted, covered)))
                found = self.graph.search(q, want, threads=self.threads)
                keys = np.asarray(found.keys, dtype=np.int64).reshape(q.shape[0], -1)
                # One query gives Matches (no counts), several give BatchMatches.
                counts = np.asarray(getattr(found, "counts", [len(found)])).reshape(-1)
                vectors = self.store.vectors()
                for row in range(q.shape[0]):
                    cand = keys[row, : counts[row]]
                    if deleted.size:
                        cand = cand[~np.isin(cand, deleted)]
                    if cand.size == 0:
                        continue
                    cand = np.sort(cand)  # sorted ids read the memmap front to back
                    exact = np.asarray(vectors[cand], dtype=np.float32) @ q[row]
                    top = np.argsort(-exact, kind="stable")[:kk]
                    scores[row, : top.size], ids[row, : top.size] = exact[top], cand[top]
                scores, ids = sort_topk(np.where(ids < 0, -np.inf, scores).astype(np.float32), ids)
            if rows > covered:  # committed after the graph was last extended: searched exactly
                tail = exact_search(self.store.vectors()[covered:rows], q, kk, id_offset=covered, exclude=deleted)
                scores, ids = merge_topk((scores, ids), tail, kk)
        return scores, np.where(np.isfinite(scores), ids, -1).astype(np.int64)
