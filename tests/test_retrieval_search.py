"""Exact search against brute-force numpy, and the optional FAISS backend (recall, persistence)."""

import json
import sys

import numpy as np
import pytest

from edge_mm.errors import BackendError, InputError, UsageError
from runtime.retrieval import ExactIndex, IndexStore, ModelInfo, exact_search, open_search_index, recall_at_k
from runtime.retrieval.search import prepare_queries

MODEL = ModelInfo("clip-test", "c" * 64)


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def random_unit(n: int, dim: int, seed: int) -> np.ndarray:
    return unit(np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32))


def clustered(n: int, dim: int, clusters: int, spread: float, seed: int, centers_seed: int = 100) -> np.ndarray:
    """Unit vectors around `clusters` random centres; cos(point, centre) ~ 1/sqrt(1+spread^2)."""
    centers = random_unit(clusters, dim, centers_seed)
    rng = np.random.default_rng(seed)
    x = centers[rng.integers(0, clusters, n)] + spread * rng.standard_normal((n, dim)).astype(np.float32) / np.sqrt(dim)
    return unit(x)


def fill(path, vectors: np.ndarray) -> IndexStore:
    store = IndexStore(path, dim=vectors.shape[1], model_info=MODEL, mode="a")
    for lo in range(0, len(vectors), 5000):
        chunk = vectors[lo : lo + 5000]
        store.add(chunk, [{"content_hash": f"h{lo + i}", "path": f"{lo + i}.jpg"} for i in range(len(chunk))])
    return store


def brute_force(stored: np.ndarray, queries: np.ndarray, k: int):
    """The oracle: float64 scores of every row against the (normalised) queries, full sort."""
    q = queries.astype(np.float64)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    scores = q @ stored.astype(np.float64).T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), order


@pytest.mark.parametrize("chunk_rows", [7, 1000, 8192])
@pytest.mark.parametrize("cache_bytes", [0, None, 1 << 30])
def test_exact_search_matches_brute_force(tmp_path, chunk_rows, cache_bytes):
    data = random_unit(3000, 48, seed=0)
    queries = np.random.default_rng(1).standard_normal((9, 48)).astype(np.float32) * 3  # not unit: gets normalised
    with fill(tmp_path / "idx", data) as store:
        index = ExactIndex(store, chunk_rows=chunk_rows, cache_bytes=cache_bytes)
        scores, ids = index.search(queries, 25)
    ref_scores, ref_ids = brute_force(data.astype(np.float16), queries, 25)  # the store keeps fp16
    assert scores.shape == ids.shape == (9, 25) and ids.dtype == np.int64
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(scores, ref_scores, atol=2e-6)
    assert (np.diff(scores, axis=1) <= 0).all()  # best first


def test_exact_search_finds_each_item_itself(tmp_path):
    data = random_unit(500, 64, seed=3)
    with fill(tmp_path / "idx", data) as store:
        scores, ids = open_search_index(store).search(data, 1)
    np.testing.assert_array_equal(ids[:, 0], np.arange(500))
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=2e-3)  # fp16 storage rounding


def test_ties_are_ordered_by_id_and_k_larger_than_n(tmp_path):
    base = random_unit(3, 16, seed=5)
    data = base[[0, 1, 0, 2, 0]]  # rows 0, 2, 4 are the same vector
    with fill(tmp_path / "idx", data) as store:
        scores, ids = ExactIndex(store, chunk_rows=2).search(base[0], 50)
    assert ids.shape == (1, 5)  # k > n: every item, once
    assert ids[0, :3].tolist() == [0, 2, 4] and sorted(ids[0].tolist()) == [0, 1, 2, 3, 4]
    assert scores[0, 0] == scores[0, 1] == scores[0, 2]


def test_empty_index_and_bad_queries(tmp_path):
    with IndexStore(tmp_path / "idx", dim=16, model_info=MODEL, mode="a") as store:
        index = ExactIndex(store)
        scores, ids = index.search(random_unit(4, 16, 0), 10)
        assert scores.shape == ids.shape == (4, 0)
        with pytest.raises(InputError, match=r"shape \(Q, 16\)"):
            index.search(np.ones((2, 8), np.float32), 3)
        with pytest.raises(InputError, match="all-zero"):
            index.search(np.zeros(16, np.float32), 3)
        with pytest.raises(InputError, match="positive integer"):
            index.search(random_unit(1, 16, 0), 0)
        with pytest.raises(UsageError, match="unknown search backend"):
            open_search_index(store, "annoy")


def test_searcher_sees_items_added_after_it_was_made(tmp_path):
    data = random_unit(200, 32, seed=7)
    with fill(tmp_path / "idx", data[:100]) as writer, IndexStore(tmp_path / "idx") as reader:
        index = ExactIndex(reader)  # cache on: must extend, not go stale
        assert index.search(data[150], 1)[1][0, 0] != 150
        writer.add(data[100:], [{"content_hash": f"n{i}", "path": ""} for i in range(100)])
        assert index.search(data[150], 1)[1][0, 0] == 150


def test_exact_search_on_fp32_rows_with_offset():
    data = random_unit(50, 8, seed=2)
    q = prepare_queries(data[10:12], 8)
    scores, ids = exact_search(data, q, 3, chunk_rows=16, id_offset=1000)
    assert ids[:, 0].tolist() == [1010, 1011]


def test_recall_at_k():
    exact = np.array([[1, 2, 3], [4, 5, 6]])
    assert recall_at_k(np.array([[3, 2, 1], [4, 9, -1]]), exact, 3) == pytest.approx((1 + 1 / 3) / 2)


# ---- FAISS ------------------------------------------------------------------------------------------


def test_missing_faiss_gives_an_install_hint(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # makes `import faiss` raise ImportError
    with fill(tmp_path / "idx", random_unit(10, 8, 0)) as store:
        with pytest.raises(BackendError, match="pip install faiss-cpu"):
            open_search_index(store, "faiss")


@pytest.fixture(scope="module")
def clustered_store(tmp_path_factory):
    """10 000 vectors of 96-d around 500 centres (20 per centre), 100 held-out queries.

    With spread 1.0 a point's cosine to its centre is ~0.7 and its 10th neighbour's ~0.5, like
    near-duplicate frames of a few hundred scenes; harder (near-isotropic) data is in the bench.
    """
    pytest.importorskip("faiss", reason="faiss-cpu is not installed")
    data = clustered(10_000, 96, clusters=500, spread=1.0, seed=0)
    queries = clustered(100, 96, clusters=500, spread=1.0, seed=1)
    store = fill(tmp_path_factory.mktemp("faiss") / "idx", data)
    exact = ExactIndex(store).search(queries, 10)
    yield store, queries, exact
    store.close()


# Measured on this data and on a second draw of it (other centres and seeds), faiss-cpu 1.15.1:
# ivf-flat with the defaults nlist=256, nprobe=32 gives recall@10 0.993 / 0.975 (nprobe=16: 0.986 /
# 0.949); hnsw (M=32, efSearch=128) 1.000 / 1.000. The threshold 0.95 leaves room for data draws and
# faiss versions, and still fails a starved index: nprobe=1 gives 0.923 / 0.886 (random ids ~0.001).
RECALL_THRESHOLD = 0.95


@pytest.mark.parametrize("kind", ["ivf-flat", "hnsw"])
def test_faiss_recall_at_10_on_clustered_data(clustered_store, kind):
    store, queries, (ex_scores, ex_ids) = clustered_store
    index = open_search_index(store, "faiss", kind=kind, save=False)
    scores, ids = index.search(queries, 10)
    recall = recall_at_k(ids, ex_ids, 10)
    print(f"faiss {kind} recall@10 = {recall:.4f}")
    assert recall >= RECALL_THRESHOLD
    assert (np.diff(scores, axis=1) <= 1e-6).all()
    # A returned score is the true cosine of that id (fp16 rows vs fp32 copies: tiny difference).
    true = np.einsum("qd,qkd->qk", prepare_queries(queries, 96), np.asarray(store.vectors())[ids].astype(np.float32))
    np.testing.assert_allclose(scores, true, atol=1e-3)


def test_faiss_starved_ivf_probe_loses_recall(clustered_store):
    """The recall threshold is not vacuous: probing 1 list of 256 falls below it."""
    store, queries, (_, ex_ids) = clustered_store
    index = open_search_index(store, "faiss", kind="ivf-flat", nprobe=1, save=False)
    starved = recall_at_k(index.search(queries, 10)[1], ex_ids, 10)
    assert starved < RECALL_THRESHOLD
    index.set_search_params(nprobe=index.meta["nlist"])  # every list: exhaustive, so exact
    assert recall_at_k(index.search(queries, 10)[1], ex_ids, 10) >= 0.999
    with pytest.raises(UsageError, match="ef_search applies to hnsw"):
        index.set_search_params(ef_search=10)


@pytest.mark.parametrize("kind", ["flat", "flat-fp16"])
def test_faiss_flat_kinds_are_exact(clustered_store, kind):
    store, queries, (ex_scores, ex_ids) = clustered_store
    scores, ids = open_search_index(store, "faiss", kind=kind, save=False).search(queries, 10)
    assert recall_at_k(ids, ex_ids, 10) >= 0.999
    np.testing.assert_allclose(scores, ex_scores, atol=1e-3)


def test_faiss_index_is_saved_reused_extended_and_rebuilt(tmp_path):
    pytest.importorskip("faiss", reason="faiss-cpu is not installed")
    data = clustered(3000, 32, clusters=50, spread=0.8, seed=4)
    with fill(tmp_path / "idx", data[:2000]) as store:
        first = open_search_index(store, "faiss", kind="ivf-flat")
        assert first.last_action == "built" and (tmp_path / "idx" / "faiss-ivf-flat.index").is_file()
        assert open_search_index(store, "faiss", kind="ivf-flat").last_action == "loaded"

        store.add(data[2000:], [{"content_hash": f"n{i}", "path": ""} for i in range(1000)])
        # Rows committed after the FAISS index was built are still found (searched exactly).
        assert first.search(data[2500], 1)[1][0, 0] == 2500
        second = open_search_index(store, "faiss", kind="ivf-flat")
        assert second.last_action == "extended" and second.index.ntotal == 3000
        assert second.search(data[2500], 1)[1][0, 0] == 2500

        # A sidecar from another store (different uuid) is not trusted: rebuilt.
        sidecar = tmp_path / "idx" / "faiss-ivf-flat.json"
        meta = json.loads(sidecar.read_text())
        sidecar.write_text(json.dumps({**meta, "index_uuid": "0" * 32}))
        assert open_search_index(store, "faiss", kind="ivf-flat").last_action == "built"
        # So is a damaged index file.
        (tmp_path / "idx" / "faiss-ivf-flat.index").write_bytes(b"garbage")
        rebuilt = open_search_index(store, "faiss", kind="ivf-flat")
        assert rebuilt.last_action == "built" and rebuilt.search(data[7], 1)[1][0, 0] == 7

        with pytest.raises(UsageError, match="unknown FAISS index kind"):
            open_search_index(store, "faiss", kind="lsh")


def test_faiss_retrains_after_doubling_and_handles_empty_and_k_over_n(tmp_path):
    pytest.importorskip("faiss", reason="faiss-cpu is not installed")
    data = clustered(1200, 16, clusters=20, spread=0.8, seed=6)
    with IndexStore(tmp_path / "idx", dim=16, model_info=MODEL, mode="a") as store:
        empty = open_search_index(store, "faiss", kind="hnsw")
        assert empty.search(data[0], 5)[1].shape == (1, 0)
        store.add(data[:3], [{"content_hash": f"a{i}", "path": ""} for i in range(3)])
        scores, ids = empty.search(data[1], 10)  # k > n, all three rows come from the exact tail
        assert ids.shape == (1, 3) and ids[0, 0] == 1

        store.add(data[3:400], [{"content_hash": f"b{i}", "path": ""} for i in range(397)])
        ivf = open_search_index(store, "faiss", kind="ivf-flat")
        assert ivf.meta["trained_rows"] == 400
        store.add(data[400:], [{"content_hash": f"c{i}", "path": ""} for i in range(800)])
        again = open_search_index(store, "faiss", kind="ivf-flat")
        assert again.last_action == "built" and again.meta["trained_rows"] == 1200
