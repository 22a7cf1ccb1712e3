"""Optional FAISS search over an IndexStore, for collections too large for exact search (torch-free).

Same API as ExactIndex: `search(queries, k) -> (scores, ids)`. faiss (PyPI `faiss-cpu`) is imported
only when a FaissIndex is made. The FAISS index is saved beside the store as
`faiss-<kind>.index` with a JSON sidecar (store uuid, row count, factory string); on open a saved
index is reused when it belongs to this store, extended with the rows added since (IVF lists and
HNSW graphs take new vectors without retraining), and rebuilt when it is foreign, damaged, or the
store has more than doubled since the IVF centroids were trained. Rows committed after the FAISS
index was last brought up to date are searched exactly and merged in, so new items are always found.
"""

from __future__ import annotations

import json
import math
from typing import Any, Dict, Optional, Tuple

import numpy as np
from tqdm import tqdm

from edge_mm.atomic import atomic_path, write_json
from edge_mm.errors import BackendError, IndexStoreError, UsageError
from runtime.retrieval.search import check_k, exact_search, merge_topk, prepare_queries
from runtime.retrieval.store import IndexStore

SIDECAR_FORMAT = 1
# kind -> faiss index_factory string; {nlist} and {m} are filled in at build time.
FACTORIES = {
    "flat": "Flat",  # exact, float32 copy in RAM
    "flat-fp16": "SQfp16",  # exact on fp16 codes (half the RAM of flat)
    "ivf-flat": "IVF{nlist},Flat",  # inverted lists over k-means cells, float32 vectors
    "hnsw": "HNSW{m}",  # graph search, float32 vectors
}
ADD_CHUNK_ROWS = 65536
# Training points per IVF centroid: faiss warns below 39; 64 gives stable centroids and stays fast.
TRAIN_POINTS_PER_LIST = 64


def import_faiss() -> Any:
    try:
        import faiss  # noqa: PLC0415 - heavy and optional, so imported only when asked for
    except ImportError:
        raise BackendError(
            "the FAISS search backend needs the faiss-cpu package: pip install faiss-cpu (or search with backend='exact')"
        ) from None
    return faiss


# k-means cost grows with nlist squared (training points scale with nlist): 1024 lists train in
# ~30 s on 2 CPU cores at 1M rows, 4 sqrt(1M) = 4000 would take several minutes. Latency depends on
# the fraction of rows probed (nprobe / nlist), not on nlist itself.
MAX_DEFAULT_NLIST = 1024


def default_nlist(rows: int) -> int:
    """About 4 sqrt(n) IVF lists (faiss's rule of thumb), at least 39 training points per list,
    at most MAX_DEFAULT_NLIST."""
    return int(max(1, min(round(4 * math.sqrt(max(rows, 1))), rows // 39, MAX_DEFAULT_NLIST)))


def default_nprobe(nlist: int) -> int:
    """Probe 1/8 of the lists (at least 8). On the clustered test data (nlist 256) recall@10 is
    0.975-0.993 with it and 0.949-0.986 with 1/16 (tests/test_retrieval_search.py); scanning 1/8
    of the rows is still ~8x less work than exact search."""
    return int(min(nlist, max(8, math.ceil(nlist / 8))))


class FaissIndex:
    """Approximate (or FAISS-exact) cosine search over `store`; kinds: flat, flat-fp16, ivf-flat, hnsw."""

    name = "faiss"

    def __init__(
        self,
        store: IndexStore,
        kind: str = "ivf-flat",
        nlist: Optional[int] = None,
        nprobe: Optional[int] = None,
        hnsw_m: int = 32,
        ef_search: int = 128,
        ef_construction: int = 80,
        save: bool = True,
        threads: Optional[int] = None,
    ) -> None:
        if kind not in FACTORIES:
            raise UsageError(f"unknown FAISS index kind {kind!r}; choose one of {', '.join(FACTORIES)}")
        self.faiss = import_faiss()
        if threads is not None:
            self.faiss.omp_set_num_threads(int(threads))
        self.store = store
        self.kind = kind
        self.nlist_wanted = nlist
        self.nprobe_wanted = nprobe
        self.hnsw_m = int(hnsw_m)
        self.ef_search = int(ef_search)
        self.ef_construction = int(ef_construction)
        self.save_to_disk = save
        self.index_path = store.path / f"faiss-{kind}.index"
        self.sidecar_path = store.path / f"faiss-{kind}.json"
        self.index: Any = None
        self.meta: Dict[str, Any] = {}
        self.last_action = "none"  # loaded | extended | built: what refresh() did, for logs and tests
        self.refresh()

    # -- building and keeping up to date ------------------------------------------------------------
    def refresh(self) -> None:
        """Bring the FAISS index up to the store's committed rows (load, extend or rebuild), then save."""
        rows = len(self.store)
        loaded = self._load()
        if loaded and self.meta["rows"] <= rows and not self._needs_retrain(rows):
            self.last_action = "loaded"
            if self.meta["rows"] < rows:
                self._add_rows(self.meta["rows"], rows)
                self.last_action = "extended"
        else:
            self._build(rows)
            self.last_action = "built"
        self._apply_search_params()
        if self.last_action != "loaded" and self.save_to_disk:
            self._save()

    def _needs_retrain(self, rows: int) -> bool:
        if self.kind != "ivf-flat":
            return False
        if self.nlist_wanted is not None and self.nlist_wanted != self.meta["nlist"]:
            return True
        # Centroids trained on n rows still partition 2n rows of the same distribution well.
        return rows > 2 * max(self.meta["trained_rows"], 1)

    def _load(self) -> bool:
        if not (self.index_path.is_file() and self.sidecar_path.is_file()):
            return False
        try:
            meta = json.loads(self.sidecar_path.read_text())
            if (
                meta.get("format") != SIDECAR_FORMAT
                or meta.get("index_uuid") != self.store.index_uuid
                or meta.get("kind") != self.kind
                or meta.get("dim") != self.store.dim
                or (self.kind == "hnsw" and meta.get("hnsw_m") != self.hnsw_m)
            ):
                return False
            index = self.faiss.read_index(str(self.index_path))
        except (OSError, ValueError, RuntimeError):
            return False  # damaged or foreign: rebuilt from the store, which is the truth
        if index.ntotal != meta.get("rows") or index.d != self.store.dim:
            return False
        self.index, self.meta = index, meta
        return True

    def _build(self, rows: int) -> None:
        faiss = self.faiss
        dim = self.store.dim
        nlist = (self.nlist_wanted or default_nlist(rows)) if self.kind == "ivf-flat" else 0
        if self.kind == "ivf-flat" and not 1 <= nlist <= max(rows, 1):
            raise UsageError(f"nlist must be between 1 and the number of rows ({rows}), got {nlist}")
        factory = FACTORIES[self.kind].format(nlist=nlist, m=self.hnsw_m)
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
        if self.kind == "hnsw":
            index.hnsw.efConstruction = self.ef_construction
        vectors = self.store.vectors()
        if not index.is_trained and rows > 0:
            sample = min(rows, TRAIN_POINTS_PER_LIST * max(nlist, 1))
            pick = np.sort(np.random.default_rng(0).choice(rows, size=sample, replace=False))
            index.train(np.ascontiguousarray(vectors[pick], dtype=np.float32))
        self.index = index
        self.meta = {
            "format": SIDECAR_FORMAT,
            "kind": self.kind,
            "factory": factory,
            "dim": dim,
            "nlist": nlist,
            "hnsw_m": self.hnsw_m,
            "rows": 0,
            "trained_rows": rows,
            "index_uuid": self.store.index_uuid,
            "faiss_version": faiss.__version__,
        }
        self._add_rows(0, rows)

    def _add_rows(self, start: int, stop: int) -> None:
        vectors = self.store.vectors()
        with tqdm(total=stop - start, desc=f"faiss {self.kind}", unit="vec", disable=stop - start < 200_000) as bar:
            for lo in range(start, stop, ADD_CHUNK_ROWS):
                hi = min(lo + ADD_CHUNK_ROWS, stop)
                self.index.add(np.ascontiguousarray(vectors[lo:hi], dtype=np.float32))
                bar.update(hi - lo)
        self.meta["rows"] = stop

    def _apply_search_params(self) -> None:
        if self.kind == "ivf-flat":
            nlist = self.meta["nlist"]
            self.nprobe = int(min(nlist, self.nprobe_wanted or default_nprobe(nlist)))
            self.faiss.extract_index_ivf(self.index).nprobe = self.nprobe
        elif self.kind == "hnsw":
            self.index.hnsw.efSearch = self.ef_search

    def set_search_params(self, nprobe: Optional[int] = None, ef_search: Optional[int] = None) -> None:
        """Trade recall for speed without rebuilding: IVF lists probed, HNSW candidate-list size."""
        if nprobe is not None:
            if self.kind != "ivf-flat" or nprobe < 1:
                raise UsageError(f"nprobe applies to ivf-flat and must be >= 1 (kind {self.kind}, nprobe {nprobe})")
            self.nprobe_wanted = int(nprobe)
        if ef_search is not None:
            if self.kind != "hnsw" or ef_search < 1:
                raise UsageError(
                    f"ef_search applies to hnsw and must be >= 1 (kind {self.kind}, ef_search {ef_search})"
                )
            self.ef_search = int(ef_search)
        self._apply_search_params()

    def _save(self) -> None:
        try:
            with atomic_path(self.index_path) as tmp:
                self.faiss.write_index(self.index, str(tmp))
            write_json(self.sidecar_path, self.meta, indent=1, sort_keys=True)
        except OSError as exc:
            raise IndexStoreError(
                f"cannot save the FAISS index beside {self.store.path} ({exc}); make the folder writable or pass save=False"
            ) from None

    # -- searching ------------------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
        """(scores, ids) of the k best items per query, best first; (Q, min(k, len(store))).

        An approximate kind may find fewer than k for a query: those slots hold id -1, score -inf.
        """
        k = check_k(k)
        q = prepare_queries(queries, self.store.dim)
        rows = len(self.store)
        covered = int(self.index.ntotal)
        kk = min(k, rows)
        deleted = self.store.deleted_ids()
        scores = np.full((q.shape[0], kk), -np.inf, dtype=np.float32)
        ids = np.full((q.shape[0], kk), -1, dtype=np.int64)
        if covered > 0 and kk > 0:
            # Removed rows are still in the FAISS index: ask for enough more to drop them and keep k.
            found_s, found_i = self.index.search(q, min(covered, kk + int(np.searchsorted(deleted, covered))))
            dead = (found_i < 0) | np.isin(found_i, deleted)
            found = (np.where(dead, -np.inf, found_s).astype(np.float32), np.where(dead, -1, found_i))
            scores, ids = merge_topk((scores, ids), found, kk)
        if rows > covered:  # committed after the FAISS index was refreshed: search those exactly
            tail = exact_search(self.store.vectors()[covered:rows], q, kk, id_offset=covered, exclude=deleted)
            scores, ids = merge_topk((scores, ids), tail, kk)
        return scores, ids.astype(np.int64)
