"""`edge-mm-index add --ray`: Ray Data embeds, this process writes; same rows as the local path.

One local Ray with 2 CPUs is started inside the test module and stopped at its end (ray.init is
slow on a loaded 2-core box, so every Ray check shares it). The artifact is a tiny random CLIP on
ONNX Runtime; the images are a few synthetic scenes.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from retrieval_support import tiny_clip_artifact, write_scene_images

from runtime.retrieval.cli import main
from runtime.retrieval.ingest import IngestOptions, resolve_target
from runtime.retrieval.store import IndexStore

ROOT = Path(__file__).resolve().parents[1]
ray = pytest.importorskip("ray", reason="Ray is the optional extra edge-mm[ray]; these tests need it")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return tiny_clip_artifact(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


def rows_of(index):
    """Items, stored vectors (re-normalised: fp16 rounding moves a 32-d norm by ~1e-4) and thumbnails."""
    with IndexStore(index) as store:
        items = store.items(range(len(store)))
        vectors = np.asarray(store.vectors(), np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        thumbs = [store.thumbnail(i["id"]) for i in items]
    return items, vectors, thumbs


def add(capsys, *argv):
    code = main(["add", *map(str, argv), "--json", "--batch", "3"])
    out = capsys.readouterr().out
    assert code == 0, out
    return json.loads(out.strip().splitlines()[-1])


def test_ray_add_gives_the_local_rows_and_skips_what_is_indexed(tmp_path, clip, local_ray, capsys):
    photos = tmp_path / "photos"
    write_scene_images(photos, 7)
    (photos / "broken.png").write_bytes(b"not an image")
    local, remote = tmp_path / "local", tmp_path / "ray"

    add(capsys, "--model", clip, "--index", local, photos)
    # Part of the folder first: the rerun must send only what is missing.
    partial = tmp_path / "partial"
    partial.mkdir()
    for p in sorted(photos.glob("scene_00[0-2].png")):
        shutil.copy(p, partial / p.name)
    first = add(capsys, "--ray", "--model", clip, "--index", remote, partial)
    assert (first["added"], first["skipped"]) == (3, 0)
    with IndexStore(remote, mode="r") as store:
        assert len(store) == 3

    second = add(capsys, "--ray", "--index", remote, photos)
    assert (second["added"], second["skipped"], second["unreadable"]) == (4, 3, 1)

    want, want_vec, want_thumbs = rows_of(local)
    got, got_vec, got_thumbs = rows_of(remote)
    by_hash = {it["content_hash"]: it for it in want}
    assert sorted(by_hash) == sorted(it["content_hash"] for it in got)
    for it, vec, thumb in zip(got, got_vec, got_thumbs):
        ref = by_hash[it["content_hash"]]
        # The same metadata (paths differ only where the partial copy lives).
        assert Path(it["path"]).name == Path(ref["path"]).name
        assert (it["source"], it["extra"], it["frame_time"], it["box"]) == (
            ref["source"],
            ref["extra"],
            ref["frame_time"],
            ref["box"],
        )
        assert float(vec @ want_vec[ref["id"]]) >= 0.9999
        assert thumb is not None and thumb == want_thumbs[ref["id"]]


def test_nothing_is_sent_when_everything_is_indexed(tmp_path, clip, local_ray):
    from runtime.retrieval.ray_ingest import RayIngest

    photos = tmp_path / "photos"
    write_scene_images(photos, 3)
    options = IngestOptions(batch_size=2, progress=False)
    with IndexStore(tmp_path / "idx", dim=32, model_info=_model(clip), mode="a") as store:
        first = RayIngest(clip, store, options, pool_style="concurrency")
        report = first.run([resolve_target(str(photos))])
        assert report.added == 3 and first.sent == 3
        again = RayIngest(clip, store, options)
        report = again.run([resolve_target(str(photos))])
        assert (report.added, report.skipped, again.sent) == (0, 3, 0)


def _model(clip):
    from runtime.retrieval.artifact_note import clip_identity

    return clip_identity(Path(clip))[1]


def test_pool_shim_speaks_both_ray_apis():
    from runtime.retrieval.ray_ingest import actor_pool_kwargs

    current = actor_pool_kwargs(2)
    assert set(current) == {"compute"} and current["compute"].__class__.__name__ == "ActorPoolStrategy"
    assert actor_pool_kwargs(3, style="concurrency") == {"concurrency": 3}

    def old_map_batches(self, fn, *, batch_size=None, concurrency=None):  # the 2.9-era signature
        pass

    assert actor_pool_kwargs(2, map_batches=old_map_batches) == {"concurrency": 2}


def test_without_ray_the_flag_is_a_one_line_error(tmp_path, clip):
    blocker = tmp_path / "noray"
    blocker.mkdir()
    (blocker / "ray").mkdir()
    (blocker / "ray" / "__init__.py").write_text("raise ImportError('ray is not installed here')\n")
    env_path = f"{blocker}:{ROOT}"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "runtime.retrieval.cli",
            "add",
            "--ray",
            "--model",
            str(clip),
            "--index",
            str(tmp_path / "i"),
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": env_path, "HOME": str(tmp_path)},
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'edge-mm[ray]'" in lines[0]
    assert not (tmp_path / "i").exists()


def test_a_killed_driver_leaves_a_consistent_index_and_rerun_resumes(tmp_path, clip, local_ray, capsys):
    """SIGKILL the `add --ray ADDRESS` driver after its first commits; the rerun adds only the rest."""
    import os
    import signal
    import time

    photos = tmp_path / "photos"
    write_scene_images(photos, 24)
    index = tmp_path / "idx"
    address = ray.get_runtime_context().gcs_address
    args = ["add", "--ray", address, "--model", str(clip), "--index", str(index), str(photos), "--batch", "2"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "runtime.retrieval.cli", *args, "--no-progress"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        committed = 0
        deadline = time.monotonic() + 240
        while committed < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
            if (index / "meta.sqlite").exists():
                with IndexStore(index) as store:
                    committed = len(store)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert committed >= 2, proc.stderr.read().decode()[-2000:]

    with IndexStore(index) as store:  # consistent: whole batches, each row the local path's vector
        n = len(store)
        assert n % 2 == 0 and n < 24 or proc.returncode == 0
        killed_items = store.items(range(n))
    resumed = add(capsys, "--ray", "--index", index, photos)
    assert resumed["added"] == 24 - n and resumed["skipped"] == n and resumed["items"] == 24
    local = tmp_path / "local"
    add(capsys, "--model", clip, "--index", local, photos)
    want, want_vec, _ = rows_of(local)
    got, got_vec, _ = rows_of(index)
    assert [it["content_hash"] for it in got[:n]] == [it["content_hash"] for it in killed_items]
    by_hash = {it["content_hash"]: it["id"] for it in want}
    assert sorted(by_hash) == sorted(it["content_hash"] for it in got)
    assert min(float(v @ want_vec[by_hash[it["content_hash"]]]) for it, v in zip(got, got_vec)) >= 0.9999
