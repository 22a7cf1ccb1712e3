"""On-device embedding index for CLIP retrieval (torch-free: numpy, sqlite3, optional faiss).

store = IndexStore("idx", dim=512, model_info=ModelInfo.from_spec(spec), mode="a")
ids = store.add(unit_vectors, [{"content_hash": h, "path": p} for h, p in ...])
scores, ids = open_search_index(store).search(text_embeddings, k=8)
hits = store.items(ids[0])
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Union

from edge_mm.errors import UsageError
from runtime.retrieval.search import ExactIndex, exact_search, recall_at_k
from runtime.retrieval.store import IndexStore, ModelInfo

if TYPE_CHECKING:
    from runtime.retrieval.faiss_index import FaissIndex

BACKENDS = ("exact", "faiss")


def open_search_index(store: IndexStore, backend: str = "exact", **options: Any) -> Union[ExactIndex, "FaissIndex"]:
    """A searcher over `store`: 'exact' (numpy, default) or 'faiss' (options go to FaissIndex)."""
    if backend == "exact":
        return ExactIndex(store, **options)
    if backend == "faiss":
        from runtime.retrieval.faiss_index import FaissIndex  # faiss is optional: import on demand

        return FaissIndex(store, **options)
    raise UsageError(f"unknown search backend {backend!r}; choose one of {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "ExactIndex", "IndexStore", "ModelInfo", "exact_search", "open_search_index", "recall_at_k"]
