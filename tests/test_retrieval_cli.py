"""`edge-mm-index` end to end on real (tiny, random) CLIP artifacts and ONNX Runtime.

add: image folders (content-hash dedupe), video frames at --fps, RealSense recordings with and
without a saliency model; search: text, --image, --queries, --json; errors: another model's
artifact, bad targets (one line, exit 2, in a subprocess); Ctrl-C during add keeps what was
committed and the same command resumes.
"""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from retrieval_support import tiny_clip_artifact, write_scene_images, write_video
from support import pyrealsense2_or_skip

from runtime.retrieval.cli import main
from runtime.retrieval.embed import ClipEmbedder, locate_clip_artifact
from runtime.retrieval.store import IndexStore

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return tiny_clip_artifact(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def other_clip(tmp_path_factory):
    return tiny_clip_artifact(tmp_path_factory.getbasetemp(), seed=1)


def run_json(capsys, argv):
    code = main(argv + ["--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    return json.loads(out.strip().splitlines()[-1])


def cli(*args, timeout=120):
    return subprocess.run(
        [sys.executable, "-m", "runtime.retrieval.cli", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def items_of(index):
    with IndexStore(index) as store:
        return store.items(range(len(store)))


def test_add_folder_skips_what_is_indexed(tmp_path, clip, capsys):
    paths = write_scene_images(tmp_path / "photos", 9)
    (tmp_path / "photos" / "more").mkdir()
    cv2.imwrite(str(tmp_path / "photos" / "more" / "copy.jpg"), cv2.imread(str(paths[0])))
    (tmp_path / "photos" / "broken.png").write_bytes(b"not an image")
    (tmp_path / "photos" / "notes.txt").write_text("ignored: not an image suffix")
    index = tmp_path / "idx"

    first = run_json(
        capsys, ["add", "--model", str(clip), "--index", str(index), str(tmp_path / "photos"), "--batch", "4"]
    )
    assert (first["added"], first["skipped"], first["unreadable"], first["items"]) == (10, 0, 1, 10)
    stored = items_of(index)
    assert sorted(Path(i["path"]).name for i in stored) == sorted([p.name for p in paths] + ["copy.jpg"])
    assert all(i["source"] == "image" and i["frame_time"] is None and i["box"] is None for i in stored)
    assert len({i["content_hash"] for i in stored}) == 10

    again = run_json(capsys, ["add", "--index", str(index), str(tmp_path / "photos")])  # the index names its model
    assert (again["added"], again["skipped"], again["items"]) == (0, 10, 10)

    info = run_json(capsys, ["info", "--index", str(index)])
    assert info["items"] == 10 and info["dim"] == 32 and info["model"]["name"] == "clip:custom"
    assert info["artifact"] == str(clip.resolve())


def test_stored_vectors_are_the_embedders(tmp_path, clip, capsys):
    paths = write_scene_images(tmp_path / "photos", 4)
    index = tmp_path / "idx"
    run_json(capsys, ["add", "--model", str(clip), "--index", str(index), str(tmp_path / "photos")])
    with ClipEmbedder.open(clip, backend="ort-cpu", text="no") as embedder:
        want = embedder.embed_images([cv2.imread(str(p)) for p in paths])
    with IndexStore(index) as store:
        by_path = {Path(i["path"]).name: i["id"] for i in store.items(range(len(store)))}
        got = np.asarray(store.vectors(), np.float32)[[by_path[p.name] for p in paths]]
    # fp16 storage: cosine with the fresh embedding stays above 0.9999
    assert np.min(np.sum(got * want, axis=1)) > 0.9999


def test_search_text_image_and_query_file(tmp_path, clip, capsys):
    paths = write_scene_images(tmp_path / "photos", 12)
    index = tmp_path / "idx"
    run_json(capsys, ["add", "--model", str(clip), "--index", str(index), str(tmp_path / "photos")])

    text = run_json(capsys, ["search", "--index", str(index), "a red circle on the left", "-k", "5"])
    scores = [r["score"] for r in text["results"]]
    assert len(scores) == 5 and scores == sorted(scores, reverse=True) and all(-1.01 <= s <= 1.01 for s in scores)
    assert [r["rank"] for r in text["results"]] == [1, 2, 3, 4, 5]
    assert text["query"] == {"text": "a red circle on the left"} and text["model"] == "clip:custom"
    assert {"path", "frame_time", "box", "content_hash", "id"} <= set(text["results"][0])

    image = run_json(capsys, ["search", "--index", str(index), "--image", str(paths[5]), "-k", "3"])
    assert Path(image["results"][0]["path"]).name == paths[5].name
    assert image["results"][0]["score"] > 0.999  # itself, up to fp16 storage

    queries = tmp_path / "queries.txt"
    queries.write_text("a red circle on the left\n\na blue star on the right\n")
    many = run_json(capsys, ["search", "--index", str(index), "--queries", str(queries), "-k", "2"])
    assert [q["query"]["text"] for q in many["queries"]] == ["a red circle on the left", "a blue star on the right"]
    assert many["queries"][0]["results"] == text["results"][:2]  # batched queries answer as single ones do

    assert main(["search", "--index", str(index), "a red circle", "-k", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1] == '"a red circle"' and out[2].split()[0] == "1" and len(out) == 4


def test_video_frames_at_a_chosen_rate(tmp_path, clip, capsys):
    video = write_video(tmp_path / "clip.avi", frames=25, fps=10.0)
    index = tmp_path / "idx"
    two = run_json(capsys, ["add", "--model", str(clip), "--index", str(index), str(video), "--fps", "2"])
    assert two["added"] == 5
    stored = items_of(index)
    assert sorted(i["frame_time"] for i in stored) == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0])
    assert sorted(i["extra"]["frame"] for i in stored) == [0, 5, 10, 15, 20]
    assert all(i["source"] == "video" and i["path"] == str(video.resolve()) for i in stored)

    every = run_json(capsys, ["add", "--index", str(index), str(video), "--fps", "0"])
    assert (every["added"], every["skipped"], every["items"]) == (20, 5, 25)  # the 2 fps frames are not embedded again
    assert sorted(i["frame_time"] for i in items_of(index)) == pytest.approx([k / 10 for k in range(25)])


def test_recording_whole_frames_and_salient_crops(tmp_path, clip, d435_bag, capsys):
    from runtime_support import depth_oracle_artifact

    index = tmp_path / "idx"
    whole = run_json(capsys, ["add", "--model", str(clip), "--index", str(index), f"recording:{d435_bag}"])
    assert whole["added"] == 1
    salient = run_json(
        capsys,
        ["add", "--index", str(index), str(d435_bag), "--saliency", str(depth_oracle_artifact(tmp_path / "oracle"))],
    )
    assert (salient["added"], salient["no_object"]) == (1, 0)
    frame, crop = sorted(items_of(index), key=lambda i: i["box"] is not None)
    assert frame["box"] is None and frame["source"] == crop["source"] == "recording"
    assert frame["path"] == crop["path"] == str(d435_bag.resolve()) and crop["frame_time"] == 0.0
    x0, y0, x1, y1 = crop["box"]
    assert 0 <= x0 < x1 <= 640 and 0 <= y0 < y1 <= 480 and (x1 - x0) * (y1 - y0) < 640 * 480
    assert crop["extra"]["frame_size"] == [640, 480] and 0.5 <= crop["extra"]["saliency_score"] <= 1.0
    assert crop["extra"]["depth_m"] > 0

    again = run_json(capsys, ["add", "--index", str(index), str(d435_bag)])
    assert (again["added"], again["skipped"]) == (0, 1)


def test_recording_sampled_at_fps(tmp_path, clip, capsys):
    pyrealsense2_or_skip()
    from data_gen import write_rs_recording

    recording = tmp_path / "run.db3"
    written = write_rs_recording(recording, frames=10, fps=30)
    index = tmp_path / "idx"
    report = run_json(
        capsys, ["add", "--model", str(clip), "--index", str(index), f"recording:{recording}", "--fps", "10"]
    )
    stored = sorted(items_of(index), key=lambda i: i["frame_time"])
    t0 = written[0].timestamp_ms
    times = [(w.timestamp_ms - t0) / 1000 for w in written]
    kept, due = [], 0.0  # the first frame at or after each 0.1 s step
    for t in times:
        if t >= due - 1e-7:
            kept.append(t)
            due = (np.floor(t / 0.1 + 1e-6) + 1) * 0.1
    assert report["added"] == len(stored) == len(kept) == 4  # 30 fps -> 10 fps: frames 0, 3, 6, 9
    assert [i["frame_time"] for i in stored] == pytest.approx(kept, abs=1e-5)


def test_another_models_artifact_is_a_one_line_error(tmp_path, clip, other_clip, capsys):
    write_scene_images(tmp_path / "photos", 2)
    index = tmp_path / "idx"
    run_json(capsys, ["add", "--model", str(clip), "--index", str(index), str(tmp_path / "photos")])
    for args in (
        ["search", "--index", index, "--model", other_clip, "a red circle"],
        ["add", "--index", index, "--model", other_clip, tmp_path / "photos"],
    ):
        done = cli(*args)
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: index ") and "use a new index path" in lines[0], lines
    assert len(items_of(index)) == 2


@pytest.mark.parametrize(
    "args,says",
    [
        (["add", "--index", "{tmp}/idx", "{tmp}/nowhere"], "does not exist"),
        (["add", "--index", "{tmp}/idx", "--model", "{tmp}", "{tmp}/empty"], "holds no image files"),
        (["search", "--index", "{tmp}/idx", "a mug"], "no retrieval index"),
        (["add", "--index", "{tmp}/idx", "--model", "{tmp}", "synthetic:3"], "is endless; pass --max-frames"),
        (["add", "--index", "{tmp}/idx", "--model", "{tmp}/photos", "{tmp}/photos"], "--model takes a CLIP artifact"),
    ],
)
def test_bad_input_is_one_line(tmp_path, args, says):
    write_scene_images(tmp_path / "photos", 1)
    (tmp_path / "empty").mkdir()
    done = cli(*[a.format(tmp=tmp_path) for a in args])
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], lines


def test_artifact_graph_folders_are_accepted(clip):
    whole = locate_clip_artifact(clip)
    assert locate_clip_artifact(clip / "image") == whole == locate_clip_artifact(clip / "text")
    assert whole.image == clip / "image" and whole.text == clip / "text"


def test_ctrl_c_keeps_committed_batches_and_resumes(tmp_path, clip):
    folder = tmp_path / "many"
    folder.mkdir()
    rng = np.random.default_rng(0)
    count = 1000
    for i in range(count):
        cv2.imwrite(str(folder / f"{i:04d}.png"), rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))
    index = tmp_path / "idx"
    cmd = [
        sys.executable,
        "-m",
        "runtime.retrieval.cli",
        "add",
        "--model",
        str(clip),
        "--index",
        str(index),
        str(folder),
        "--no-progress",
        "--threads",
        "1",
    ]
    child = subprocess.Popen(
        cmd + ["--batch", "2"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 60
    committed = 0
    while committed == 0 and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.02)
        if (index / "meta.sqlite").exists():
            with IndexStore(index) as store:
                committed = len(store)
    assert committed > 0 and child.poll() is None, "the add finished or stalled before it could be interrupted"
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 130, err
    assert "Traceback" not in err and "run the same command again to resume" in err

    with IndexStore(index) as store:
        kept = len(store)
        stored = store.items(range(kept))
        vectors = np.asarray(store.vectors(), np.float32)
    assert 0 < kept < count and kept % 2 == 0  # whole batches of 2 only
    assert len({i["content_hash"] for i in stored}) == kept
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=2e-3)

    done = subprocess.run(cmd + ["--batch", "64", "--json"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert (report["added"], report["skipped"], report["items"]) == (count - kept, kept, count)


def test_the_index_tools_leave_torch_and_export_out(tmp_path, clip):
    """Import, add and search in a fresh interpreter: neither torch nor export may be loaded."""
    write_scene_images(tmp_path / "photos", 2)
    code = (
        "import sys, runtime.clip_stage; from runtime.retrieval.cli import main; "
        f"assert main(['add', '--model', {str(clip)!r}, '--index', {str(tmp_path / 'idx')!r}, {str(tmp_path / 'photos')!r}, '--no-progress']) == 0; "
        f"assert main(['search', '--index', {str(tmp_path / 'idx')!r}, 'a red circle']) == 0; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'export')))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
