"""On-device embedding index for CLIP retrieval (torch-free: numpy, sqlite3, optional usearch/faiss/ray).

store = IndexStore("idx", dim=512, model_info=ModelInfo.from_spec(spec), mode="a")
ids = store.add(unit_vectors, [{"content_hash": h, "path": p, "thumbnail": jpeg} for h, p, jpeg in ...])
scores, ids = open_search_index(store, "auto").search(text_embeddings, k=8)   # ids -1: nothing found
hits = store.items(ids[0])
store.remove([ids[0][0]])     # searches skip it at once; compact.compact(path) reclaims the space

Modules: store (the truth: fp16 rows + SQLite), search (exact), ann (usearch graph, derived),
faiss_index (FAISS, derived), compact, thumbnail, ingest / ray_ingest (filling it), cli.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Union

from edge_mm.errors import BackendError, UsageError
from runtime.retrieval.search import ExactIndex, exact_search, recall_at_k
from runtime.retrieval.store import IndexStore, ModelInfo

if TYPE_CHECKING:
    from runtime.retrieval.ann import GraphIndex
    from runtime.retrieval.faiss_index import FaissIndex

BACKENDS = ("auto", "exact", "ann", "faiss")
# From this many rows `auto` (and edge-mm-index search) uses the graph. Measured on the 2-core dev
# box (bench/bench_search.py, one thread, 512-d): exact search with the float32 copy costs ~0.06 us
# per row (p50 0.29 ms at 5k rows), so it passes 1 ms near 17k rows and grows linearly, while the
# graph answers in 0.25-0.4 ms at 5k and at 100k rows. Below 20k exact search is within 1 ms, exact,
# and needs no graph file kept up to date.
ANN_MIN_ROWS = 20_000


def open_search_index(
    store: IndexStore, backend: str = "exact", **options: Any
) -> Union[ExactIndex, "GraphIndex", "FaissIndex"]:
    """A searcher over `store`: 'exact' (numpy, default), 'ann' (usearch graph, options go to
    GraphIndex), 'faiss' (options go to FaissIndex) or 'auto' (ann from ANN_MIN_ROWS rows, else exact)."""
    if backend == "auto":
        backend = "ann" if len(store) >= ANN_MIN_ROWS else "exact"
        if backend == "ann":
            from runtime.retrieval.ann import import_usearch

            try:
                import_usearch()
            except BackendError as exc:  # a slower answer beats none
                logging.getLogger("edge_mm.runtime.retrieval").warning("%s; searching exactly", exc)
                backend = "exact"
    if backend == "exact":
        return ExactIndex(store, **options)
    if backend == "ann":
        from runtime.retrieval.ann import GraphIndex  # usearch is optional: import on demand

        return GraphIndex(store, **options)
    if backend == "faiss":
        from runtime.retrieval.faiss_index import FaissIndex  # faiss is optional: import on demand

        return FaissIndex(store, **options)
    raise UsageError(f"unknown search backend {backend!r}; choose one of {', '.join(BACKENDS)}")


__all__ = [
    "ANN_MIN_ROWS",
    "BACKENDS",
    "ExactIndex",
    "IndexStore",
    "ModelInfo",
    "exact_search",
    "open_search_index",
    "recall_at_k",
]
