"""IndexStore: layout, metadata, dedupe, model guard, crash-tail handling, locking, bad input."""

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from edge_mm.errors import EdgeMMError, IndexStoreError, InputError, UsageError
from runtime.retrieval.store import META_FILE, VECTORS_FILE, IndexStore, ModelInfo

ROOT = Path(__file__).resolve().parents[1]
DIM = 32
MODEL = ModelInfo("clip-vit-b32-test", "d" * 64)


def unit_rows(n: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def make_items(lo: int, hi: int, **fields) -> list:
    return [{"content_hash": f"h{i}", "path": f"/frames/{i}.jpg", **fields} for i in range(lo, hi)]


@pytest.fixture
def store(tmp_path):
    with IndexStore(tmp_path / "idx", dim=DIM, model_info=MODEL, mode="a") as s:
        yield s


def test_create_add_and_read_back(tmp_path, store):
    vecs = unit_rows(10)
    items = make_items(0, 10, source="cam0")
    items[3].update(frame_time=12.5, box=[1, 2, 30, 40], extra={"scene": "kitchen"})
    assert store.add(vecs, items) == list(range(10))
    assert len(store) == 10 and store.has("h3") and not store.has("nope")

    # Files on disk: fp16 rows exactly as added, SQLite info table naming the model.
    raw = np.fromfile(tmp_path / "idx" / VECTORS_FILE, dtype=np.float16).reshape(-1, DIM)
    np.testing.assert_array_equal(raw, vecs.astype(np.float16))
    info = dict(sqlite3.connect(tmp_path / "idx" / META_FILE).execute("SELECT key, value FROM info").fetchall())
    assert (
        info["dim"] == str(DIM) and info["model_name"] == MODEL.name and info["model_spec_digest"] == MODEL.spec_digest
    )
    assert info["embed_dtype"] == "float16" and info["format"] == "1"

    with IndexStore(tmp_path / "idx") as reader:  # a second, read-only handle
        assert reader.model_info == MODEL and reader.dim == DIM and len(reader) == 10
        np.testing.assert_array_equal(np.asarray(reader.vectors()), vecs.astype(np.float16))
        got = reader.items([3, 0])
    assert got[0]["id"] == 3 and got[0]["frame_time"] == 12.5 and got[0]["box"] == [1.0, 2.0, 30.0, 40.0]
    assert got[0]["extra"] == {"scene": "kitchen"} and got[0]["source"] == "cam0" and got[0]["path"] == "/frames/3.jpg"
    assert got[1]["id"] == 0 and got[1]["box"] is None and got[1]["frame_time"] is None and got[1]["extra"] == {}
    assert got[1]["added_at"] > 0


def test_duplicates_are_skipped_and_return_existing_ids(store):
    store.add(unit_rows(5), make_items(0, 5))
    # h3, h4 exist; h9 appears twice in the batch: only h5 and the first h9 become rows.
    batch = make_items(3, 6) + make_items(9, 10) + make_items(9, 10)
    ids = store.add(unit_rows(5, seed=1), batch)
    assert ids == [3, 4, 5, 6, 6]
    assert len(store) == 7
    np.testing.assert_array_equal(store.vectors()[5], unit_rows(5, seed=1)[2].astype(np.float16))
    assert store.add(unit_rows(2), make_items(0, 2)) == [0, 1] and len(store) == 7


def test_vectors_map_grows_with_commits_and_old_maps_stay_valid(store):
    assert store.vectors().shape == (0, DIM)
    store.add(unit_rows(4), make_items(0, 4))
    first = store.vectors()
    store.add(unit_rows(4, seed=2), make_items(4, 8))
    assert first.shape == (4, DIM) and store.vectors().shape == (8, DIM)
    np.testing.assert_array_equal(first, unit_rows(4).astype(np.float16))


def test_other_model_or_dim_is_refused(tmp_path, store):
    store.add(unit_rows(2), make_items(0, 2))
    store.close()
    other = ModelInfo("clip-vit-l14-test", "e" * 64)
    for mode in ("a", "r"):
        with pytest.raises(IndexStoreError, match="clip-vit-b32-test.*clip-vit-l14-test.*new index path"):
            IndexStore(tmp_path / "idx", model_info=other, mode=mode)
    # Same name and spec but other weights (e.g. OpenAI vs LAION ViT-B/32 checkpoints).
    with IndexStore(tmp_path / "w", dim=DIM, model_info=ModelInfo("m", "s", "aaa"), mode="a"):
        pass
    with pytest.raises(IndexStoreError, match="new index path"):
        IndexStore(tmp_path / "w", model_info=ModelInfo("m", "s", "bbb"), mode="a")
    with pytest.raises(IndexStoreError, match="32-d vectors, not 64-d"):
        IndexStore(tmp_path / "idx", dim=64, model_info=MODEL, mode="a")
    with IndexStore(tmp_path / "idx", model_info=dict(name=MODEL.name, spec_digest=MODEL.spec_digest)) as ok:
        assert len(ok) == 2


def test_model_info_from_spec_uses_digest_and_weights():
    from edge_mm.spec import ModelSpec, TensorSpec

    spec = ModelSpec(
        kind="clip-image",
        name="clip-vit-b32",
        inputs=[TensorSpec("image", "float32", ["batch", 3, 224, 224], "NCHW")],
        outputs=[TensorSpec("embedding", "float32", ["batch", 512])],
        source_weights_sha256="ab" * 32,
    )
    info = ModelInfo.from_spec(spec)
    assert info == ModelInfo("clip-vit-b32", spec.digest(), "ab" * 32)


def test_missing_corrupt_and_foreign_paths(tmp_path):
    with pytest.raises(IndexStoreError, match="no retrieval index at .*build one with `edge-mm-index add --index"):
        IndexStore(tmp_path / "absent")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("x")
    with pytest.raises(IndexStoreError, match="not a retrieval index"):
        IndexStore(tmp_path / "notes", dim=DIM, model_info=MODEL, mode="a")
    (tmp_path / "file").write_text("x")
    with pytest.raises(IndexStoreError, match="is a file"):
        IndexStore(tmp_path / "file", dim=DIM, model_info=MODEL, mode="a")

    with IndexStore(tmp_path / "bad", dim=DIM, model_info=MODEL, mode="a") as s:
        s.add(unit_rows(3), make_items(0, 3))
    (tmp_path / "bad" / META_FILE).write_bytes(b"this is not sqlite" * 300)
    for f in (tmp_path / "bad").glob(META_FILE + "-*"):
        f.unlink()
    for mode in ("r", "a"):
        with pytest.raises(IndexStoreError, match="corrupt or unreadable.*rebuild"):
            IndexStore(tmp_path / "bad", model_info=MODEL, mode=mode)


def test_empty_folder_becomes_an_index_and_creation_needs_dim_and_model(tmp_path):
    (tmp_path / "empty").mkdir()
    with IndexStore(tmp_path / "empty", dim=DIM, model_info=MODEL, mode="a") as s:
        assert len(s) == 0
    with pytest.raises(UsageError, match="needs the embedding dimension"):
        IndexStore(tmp_path / "new", model_info=MODEL, mode="a")
    with pytest.raises(UsageError, match="needs model_info"):
        IndexStore(tmp_path / "new", dim=DIM, mode="a")
    with pytest.raises(UsageError, match="mode must be"):
        IndexStore(tmp_path / "new", mode="w")
    assert not (tmp_path / "new").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]  # no half-made folders left


def test_vectors_file_shorter_than_committed_rows_is_damage(tmp_path, store):
    store.add(unit_rows(4), make_items(0, 4))
    store.close()
    with open(tmp_path / "idx" / VECTORS_FILE, "r+b") as fh:
        fh.truncate(3 * DIM * 2)
    with pytest.raises(IndexStoreError, match="holds 3 rows but 4 are committed"):
        IndexStore(tmp_path / "idx")


def test_orphan_tail_is_ignored_by_readers_and_cut_by_the_writer(tmp_path, store):
    store.add(unit_rows(4), make_items(0, 4))
    store.close()
    vec_file = tmp_path / "idx" / VECTORS_FILE
    with open(vec_file, "ab") as fh:  # what a writer killed between fsync and commit leaves
        fh.write(unit_rows(3, seed=9).astype(np.float16).tobytes() + b"\x01")
    tail_size = vec_file.stat().st_size
    with IndexStore(tmp_path / "idx") as reader:
        assert len(reader) == 4 and reader.vectors().shape == (4, DIM)
    assert vec_file.stat().st_size == tail_size  # readers never modify
    with IndexStore(tmp_path / "idx", model_info=MODEL, mode="a") as writer:
        assert vec_file.stat().st_size == 4 * DIM * 2
        assert writer.add(unit_rows(1, seed=5), make_items(4, 5)) == [4]
        np.testing.assert_array_equal(writer.vectors()[4], unit_rows(1, seed=5)[0].astype(np.float16))


class _InterruptedBeforeCommit(IndexStore):
    """Simulates Ctrl-C arriving after the vectors are fsynced and before the SQLite commit."""

    reader = None
    seen_by_reader = None

    def _insert_rows(self, start, rows):
        if self.reader is not None:
            self.seen_by_reader = (len(self.reader), self.reader.vectors().shape[0])
        raise KeyboardInterrupt


def test_interrupted_add_leaves_nothing_and_readers_never_see_uncommitted_rows(tmp_path):
    path = tmp_path / "idx"
    with IndexStore(path, dim=DIM, model_info=MODEL, mode="a") as s:
        s.add(unit_rows(5), make_items(0, 5))
    with _InterruptedBeforeCommit(path, model_info=MODEL, mode="a") as s, IndexStore(path) as reader:
        s.reader = reader
        with pytest.raises(KeyboardInterrupt):
            s.add(unit_rows(3, seed=1), make_items(5, 8))
        assert s.seen_by_reader == (5, 5)  # rows written but not committed are invisible
        assert len(s) == 5 and (path / VECTORS_FILE).stat().st_size == 5 * DIM * 2
        assert not s.has("h5")


def test_reader_sees_commits_of_a_concurrent_writer(tmp_path, store):
    store.add(unit_rows(3), make_items(0, 3))
    with IndexStore(tmp_path / "idx") as reader:
        assert len(reader) == 3
        store.add(unit_rows(2, seed=3), make_items(3, 5))
        assert len(reader) == 5 and reader.has("h4")
        np.testing.assert_array_equal(reader.vectors()[3:], unit_rows(2, seed=3).astype(np.float16))
        with pytest.raises(UsageError, match="mode='a'"):
            reader.add(unit_rows(1), make_items(9, 10))


def test_second_writer_is_refused_naming_the_holder_pid(tmp_path, store):
    store.add(unit_rows(1), make_items(0, 1))
    code = textwrap.dedent(
        f"""
        from runtime.retrieval.store import IndexStore, ModelInfo
        from edge_mm.errors import IndexStoreError
        try:
            IndexStore({str(tmp_path / "idx")!r}, model_info=ModelInfo({MODEL.name!r}, {MODEL.spec_digest!r}), mode="a")
        except IndexStoreError as exc:
            print(exc)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert f"already open for adding by process {os.getpid()}" in out.stdout, out.stderr
    store.close()  # once released, another writer may open it
    with IndexStore(tmp_path / "idx", model_info=MODEL, mode="a") as again:
        assert len(again) == 1


@pytest.mark.parametrize(
    "vectors, items, match",
    [
        (unit_rows(2, dim=16), make_items(0, 2), r"shape \(N, 32\)"),
        (unit_rows(2), make_items(0, 3), "2 vectors but 3 items"),
        (unit_rows(2) * 3, make_items(0, 2), "L2-normalise"),
        (np.full((1, DIM), np.nan, np.float32), make_items(0, 1), "NaN"),
        (np.ones((1, DIM), np.int32), make_items(0, 1), "floating point"),
        (unit_rows(1), [{"content_hash": "", "path": "a"}], "content_hash"),
        (unit_rows(1), [{"content_hash": "a", "path": "a", "bx": 1}], "unknown keys"),
        (unit_rows(1), [{"content_hash": "a", "path": "a", "box": [1, 2, 3]}], "4 numbers"),
        (unit_rows(1), [{"content_hash": "a", "path": "a", "box": [5, 0, 1, 1]}], "x0 <= x1"),
        (unit_rows(1), [{"content_hash": "a", "path": "a", "frame_time": "noon"}], "frame_time"),
        (unit_rows(1), [{"content_hash": "a", "path": "a", "extra": {"x": object()}}], "JSON"),
    ],
)
def test_bad_input_raises_one_line_errors_and_writes_nothing(store, vectors, items, match):
    with pytest.raises(InputError, match=match) as info:
        store.add(vectors, items)
    assert "\n" not in str(info.value)
    assert len(store) == 0 and (store.path / VECTORS_FILE).stat().st_size == 0


def test_items_of_unknown_id_and_closed_store(store):
    store.add(unit_rows(2), make_items(0, 2))
    with pytest.raises(IndexStoreError, match="no item with id 7"):
        store.items([0, 7])
    assert [r["id"] for r in store.items(np.array([1, 0, 1]))] == [1, 0, 1]
    store.close()
    with pytest.raises(EdgeMMError, match="closed"):
        len(store)


def test_info_table_is_plain_json_free_text(tmp_path, store):
    store.add(unit_rows(1), [{"content_hash": "x", "path": "p", "extra": {"k": [1, 2]}}])
    row = sqlite3.connect(tmp_path / "idx" / META_FILE).execute("SELECT extra, box FROM items").fetchone()
    assert json.loads(row[0]) == {"k": [1, 2]} and row[1] is None
