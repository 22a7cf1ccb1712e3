"""`edge-mm-index remove` and `compact` through the CLI, thumbnails, and `search` picking the graph.

A tiny random CLIP artifact on ONNX Runtime indexes a few synthetic scenes; removed items must
vanish from exact and graph search at once and stay gone after compact, which renumbers ids and
keeps every live item's vector, metadata and thumbnail.
"""

import json
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from retrieval_support import tiny_clip_artifact, write_scene_images

import runtime.retrieval as retrieval
from runtime.retrieval.cli import main
from runtime.retrieval.store import MAX_THUMBNAIL_BYTES, IndexStore
from runtime.retrieval.thumbnail import THUMBNAIL_SIDE, make_thumbnail

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return tiny_clip_artifact(tmp_path_factory.getbasetemp())


def run_json(capsys, argv):
    code = main([*map(str, argv), "--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    return json.loads(out.strip().splitlines()[-1])


def found_names(capsys, index, *extra):
    got = run_json(capsys, ["search", "--index", index, "a red circle", "-k", "50", *extra])
    return got["search"], sorted(Path(r["path"]).name for r in got["results"])


@pytest.fixture
def indexed(tmp_path, clip, capsys):
    write_scene_images(tmp_path / "photos" / "a", 5, seed=1)
    write_scene_images(tmp_path / "photos" / "b", 4, seed=2)
    index = tmp_path / "idx"
    run_json(capsys, ["add", "--model", clip, "--index", index, tmp_path / "photos", "--batch", "4"])
    return index


def test_thumbnails_are_stored_with_each_item(indexed):
    with IndexStore(indexed) as store:
        items = store.items(range(len(store)))
        assert len(items) == 9 and all(it["has_thumbnail"] for it in items)
        for it in items:
            thumb = cv2.imdecode(np.frombuffer(store.thumbnail(it["id"]), np.uint8), cv2.IMREAD_COLOR)
            source = cv2.imread(it["path"])
            assert max(thumb.shape[:2]) == min(THUMBNAIL_SIDE, max(source.shape[:2]))
            small = cv2.resize(source, (thumb.shape[1], thumb.shape[0]), interpolation=cv2.INTER_AREA)
            assert np.abs(small.astype(int) - thumb.astype(int)).mean() < 8  # the same picture, JPEG-compressed


def test_thumbnail_size_is_capped():
    noise = np.random.default_rng(0).integers(0, 256, (900, 1600, 3), dtype=np.uint8)
    data = make_thumbnail(noise)
    assert data[:3] == b"\xff\xd8\xff" and len(data) <= MAX_THUMBNAIL_BYTES
    assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR).shape == (72, 128, 3)


def test_remove_by_path_then_by_id_then_compact(indexed, capsys, monkeypatch):
    in_a, in_b = [f"scene_{i:03d}.png" for i in range(5)], [f"scene_{i:03d}.png" for i in range(4)]
    assert found_names(capsys, indexed)[1] == sorted(in_a + in_b)
    dry = run_json(capsys, ["remove", "--index", indexed, "--path", "*/b/*", "--dry-run"])
    assert (dry["matched"], dry["removed"], dry["live"]) == (4, 0, 9)

    gone = run_json(capsys, ["remove", "--index", indexed, "--path", "*/b/*"])
    assert (gone["matched"], gone["removed"], gone["live"]) == (4, 4, 5)
    search, names = found_names(capsys, indexed)
    assert search == "exact" and names == in_a
    with IndexStore(indexed) as store:
        assert all("/b/" not in it["path"] for it in store.items(range(9)) if it["deleted_at"] is None)

    # The graph path skips them too (auto picks it once the index is "large").
    monkeypatch.setattr(retrieval, "ANN_MIN_ROWS", 1)
    search, names = found_names(capsys, indexed)
    assert search == "ann" and names == in_a
    assert found_names(capsys, indexed, "--exact")[0] == "exact"

    first = run_json(capsys, ["search", "--index", indexed, "a red circle", "-k", "1"])["results"][0]
    again = run_json(capsys, ["remove", "--index", indexed, "--id", first["id"], "--id", first["id"]])
    assert again["removed"] == 1 and again["live"] == 4
    assert run_json(capsys, ["remove", "--index", indexed, "--id", first["id"]])["removed"] == 0
    results = run_json(capsys, ["search", "--index", indexed, "a red circle", "-k", "9"])["results"]
    assert len(results) == 4 and first["path"] not in [r["path"] for r in results]

    size = (indexed / "vectors.f16").stat().st_size
    done = run_json(capsys, ["compact", "--index", indexed])
    assert (done["kept"], done["removed"]) == (4, 5)
    assert (indexed / "vectors.f16").stat().st_size == size * 4 // 9
    info = run_json(capsys, ["info", "--index", indexed])
    assert (info["items"], info["live"], info["removed"]) == (4, 4, 0)
    with IndexStore(indexed) as store:
        assert [it["id"] for it in store.items(range(4))] == [0, 1, 2, 3]
        assert all(store.thumbnail(i) for i in range(4))
    assert len(found_names(capsys, indexed)[1]) == 4

    # Adding the removed file again brings it back (it is embedded again after compact).
    back = run_json(capsys, ["add", "--index", indexed, Path(first["path"])])
    assert back["added"] == 1 and back["items"] == 5


def test_remove_before_a_time(indexed, capsys, clip, tmp_path):
    cut = time.time()
    time.sleep(0.05)
    write_scene_images(tmp_path / "later", 2, seed=3)
    run_json(capsys, ["add", "--index", indexed, tmp_path / "later"])
    done = run_json(capsys, ["remove", "--index", indexed, "--before", repr(cut)])
    assert (done["removed"], done["live"]) == (9, 2)
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() + 120))
    assert run_json(capsys, ["remove", "--index", indexed, "--before", iso])["removed"] == 2


def test_a_removed_item_comes_back_when_added_again(indexed, capsys, tmp_path):
    path = sorted((tmp_path / "photos" / "a").glob("*.png"))[0]
    run_json(capsys, ["remove", "--index", indexed, "--path", str(path)])
    results = run_json(capsys, ["search", "--index", indexed, "x", "-k", "9"])["results"]
    assert len(results) == 8 and str(path) not in [r["path"] for r in results]
    back = run_json(capsys, ["add", "--index", indexed, path])
    assert back["items"] == 9
    with IndexStore(indexed) as store:
        assert store.deleted_ids().size == 0


@pytest.mark.parametrize(
    "args,says",
    [
        (["remove", "--index", "{idx}"], "say what to remove"),
        (["remove", "--index", "{idx}", "--id", "3", "--path", "*"], "do not combine"),
        (["remove", "--index", "{idx}", "--before", "yesterday"], "is not a time"),
        (["remove", "--index", "{idx}", "--id", "99"], "no item with id 99"),
        (["compact", "--index", "{tmp}/nowhere"], "no retrieval index"),
        (["search", "--index", "{idx}", "x", "--exact", "--faiss"], "exclude each other"),
        (["add", "--ray", "--index", "{tmp}/new", "{tmp}/clip.mp4"], "--ray indexes image files"),
    ],
)
def test_bad_input_is_one_line(indexed, tmp_path, args, says):
    (tmp_path / "clip.mp4").write_bytes(b"")  # a video target: refused by --ray before anything is made
    done = subprocess.run(
        [sys.executable, "-m", "runtime.retrieval.cli", *[a.format(idx=indexed, tmp=tmp_path) for a in args]],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], lines
    assert not (tmp_path / "new").exists()
    with IndexStore(indexed) as store:
        assert store.deleted_ids().size == 0  # nothing half done
