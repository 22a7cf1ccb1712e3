"""The usearch graph (backend "ann"): recall against exact search, re-ranking, how a saved graph is
reused, extended or rebuilt, never answering from a stale graph, and removed rows skipped by every
search path (exact, FAISS IVF and HNSW, graph)."""

import logging

import numpy as np
import pytest

import runtime.retrieval as retrieval
from edge_mm.errors import BackendError
from runtime.retrieval import ExactIndex, IndexStore, ModelInfo, ann, open_search_index, recall_at_k
from runtime.retrieval.store import VECTORS_FILE

try:
    ann.import_usearch()  # loads faiss before usearch (see ann.import_usearch)
except BackendError:
    pytest.skip("the graph backend needs usearch (edge-mm[retrieval])", allow_module_level=True)

MODEL = ModelInfo("clip-test", "c" * 64)
DIM = 48


def unit(x):
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def clustered(n, seed, clusters=100):
    rng = np.random.default_rng(seed)
    centers = unit(np.random.default_rng(100).standard_normal((clusters, DIM)))
    return unit(centers[rng.integers(0, clusters, n)] + rng.standard_normal((n, DIM)) / np.sqrt(DIM))


def fill(path, vectors, start=0, store=None):
    store = store or IndexStore(path, dim=DIM, model_info=MODEL, mode="a")
    store.add(vectors, [{"content_hash": f"h{start + i}", "path": f"/p/{start + i}.jpg"} for i in range(len(vectors))])
    return store


def test_graph_recall_and_rerank_scores_are_exact(tmp_path):
    data = clustered(4000, seed=1)
    store = fill(tmp_path / "idx", data)
    graph = open_search_index(store, "ann")
    assert graph.last_action == "built" and graph.covered == 4000
    queries = clustered(100, seed=2)
    scores, ids = graph.search(queries, 10)
    truth_s, truth = ExactIndex(store).search(queries, 10)
    assert recall_at_k(ids, truth, 10) >= 0.95
    # Re-ranked with the stored fp16 rows: a returned score is the exact score of that row.
    stored = np.asarray(store.vectors(), np.float32)
    np.testing.assert_allclose(scores, np.einsum("qd,qkd->qk", queries, stored[ids]), atol=1e-5)
    np.testing.assert_allclose(scores[:, 0], truth_s[:, 0], atol=1e-5)
    store.close()


def test_saved_graph_is_reused_extended_and_rebuilt(tmp_path, monkeypatch):
    data = clustered(1500, seed=3)
    store = fill(tmp_path / "idx", data[:1000])
    path = ann.graph_path(store)
    assert open_search_index(store, "ann").last_action == "built" and path.is_file()
    assert open_search_index(store, "ann").last_action == "loaded"

    added = []
    real_add = ann.GraphIndex._add_rows
    monkeypatch.setattr(
        ann.GraphIndex, "_add_rows", lambda self, a, b, label: (added.append((a, b)), real_add(self, a, b, label))
    )
    fill(None, data[1000:], start=1000, store=store)
    graph = open_search_index(store, "ann")
    assert graph.last_action == "extended" and added == [(1000, 1500)]  # only the new rows: no rebuild
    assert open_search_index(store, "ann").covered == 1500

    path.write_bytes(b"not a usearch file")  # damaged: rebuilt from the store
    added.clear()
    assert open_search_index(store, "ann").last_action == "built" and added == [(0, 1500)]

    # A graph that claims rows the store has not committed (or holds other vectors) is rebuilt.
    from usearch.index import Index

    liar = Index(ndim=DIM, metric="ip", dtype="i8", connectivity=ann.DEFAULT_CONNECTIVITY)
    liar.add(np.arange(1600), clustered(1600, seed=9))
    liar.save(str(path))
    assert open_search_index(store, "ann").last_action == "built"
    liar = Index(ndim=DIM, metric="ip", dtype="i8", connectivity=ann.DEFAULT_CONNECTIVITY)
    liar.add(np.arange(1500), clustered(1500, seed=10))
    liar.save(str(path))
    assert open_search_index(store, "ann").last_action == "built"
    store.close()


def test_another_indexs_graph_is_never_used(tmp_path):
    a = fill(tmp_path / "a", clustered(600, seed=4))
    open_search_index(a, "ann")
    b = fill(tmp_path / "b", clustered(600, seed=5))
    # Copy a's graph into b under b's name: same size, other vectors.
    ann.graph_path(b).write_bytes(ann.graph_path(a).read_bytes())
    graph = open_search_index(b, "ann")
    assert graph.last_action == "built"
    q = np.asarray(b.vectors()[:20], np.float32)
    assert (graph.search(q, 1)[1][:, 0] == np.arange(20)).all()
    a.close(), b.close()


def test_rows_added_after_opening_are_found(tmp_path, monkeypatch):
    data = clustered(900, seed=6)
    store = fill(tmp_path / "idx", data[:500])
    graph = open_search_index(store, "ann", save=False)
    fill(None, data[500:700], start=500, store=store)  # newer than the graph: searched exactly
    assert graph.covered == 500
    ids = graph.search(data[[550, 650, 10]], 1)[1][:, 0]
    assert ids.tolist() == [550, 650, 10]
    monkeypatch.setattr(ann, "EXTEND_AFTER_ROWS", 100)
    fill(None, data[700:], start=700, store=store)
    assert graph.search(data[[880]], 1)[1][0, 0] == 880 and graph.covered == 900  # the tail joined the graph
    store.close()


@pytest.mark.parametrize(
    "backend,options",
    [("exact", {}), ("ann", {}), ("faiss", {"kind": "ivf-flat", "nlist": 8}), ("faiss", {"kind": "hnsw"})],
)
def test_removed_rows_are_skipped_by_every_search_path(tmp_path, backend, options):
    if backend == "faiss":
        pytest.importorskip("faiss", reason="the FAISS backend needs faiss-cpu")
    data = clustered(1200, seed=7)
    store = fill(tmp_path / "idx", data)
    searcher = open_search_index(store, backend, **options)
    # Remove every row that is a top-5 answer to the queries (after the searcher was made).
    queries = data[[3, 300, 900]]
    before = searcher.search(queries, 5)[1]
    gone = sorted(set(before.ravel().tolist()))
    assert store.remove(gone) == len(gone) and store.remove(gone) == 0
    fill(None, clustered(50, seed=8), start=1200, store=store)  # rows newer than FAISS/graph too
    scores, ids = searcher.search(queries, 5)
    assert not set(ids.ravel().tolist()) & set(gone)
    assert (ids >= 0).all() and np.isfinite(scores).all()
    exact = ExactIndex(store).search(queries, 5)[1]
    assert recall_at_k(ids, exact, 5) >= 0.9
    # Asking for more than the live rows leaves empty slots, never a removed row.
    assert store.remove(range(0, 1250)) == 1250 - len(gone)
    scores, ids = searcher.search(queries, 3)
    assert (ids == -1).all() and np.isneginf(scores).all()
    store.close()


def test_auto_picks_the_graph_from_the_measured_size(tmp_path, monkeypatch):
    store = fill(tmp_path / "idx", clustered(300, seed=11))
    assert open_search_index(store, "auto").name == "exact"
    monkeypatch.setattr(retrieval, "ANN_MIN_ROWS", 300)
    assert open_search_index(store, "auto").name == "ann"
    store.close()


def test_a_reader_builds_and_saves_the_graph_without_touching_the_store(tmp_path):
    fill(tmp_path / "idx", clustered(400, seed=12)).close()
    size = (tmp_path / "idx" / VECTORS_FILE).stat().st_size
    with IndexStore(tmp_path / "idx", model_info=MODEL) as reader:
        assert open_search_index(reader, "ann").last_action == "built"
        assert open_search_index(reader, "ann").last_action == "loaded"
    assert (tmp_path / "idx" / VECTORS_FILE).stat().st_size == size


def test_auto_without_usearch_searches_exactly(tmp_path, monkeypatch, caplog):
    store = fill(tmp_path / "idx", clustered(300, seed=13))
    monkeypatch.setattr(retrieval, "ANN_MIN_ROWS", 100)

    def missing():
        raise BackendError("approximate search needs the usearch package")

    monkeypatch.setattr(ann, "import_usearch", missing)
    caplog.set_level(logging.WARNING)
    assert open_search_index(store, "auto").name == "exact"
    assert "searching exactly" in caplog.text
    with pytest.raises(BackendError):
        open_search_index(store, "ann")  # asked for by name: the error, not a silent fallback
    store.close()
