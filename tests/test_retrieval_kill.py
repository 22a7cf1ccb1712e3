"""Kill a process that is adding to an index (SIGKILL, SIGINT) and check nothing committed is lost.

The child adds deterministic batches (batch b, row i has content_hash "b-i" and a vector drawn
from seed b) and prints "committed N" after each add returns. The parent kills it after it has
reported some commits, reopens the index, and checks every committed row and vector, then resumes
the same ingest from the start and checks the content-hash dedupe leaves no duplicates.
"""

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from runtime.retrieval.store import VECTORS_FILE, IndexStore, ModelInfo

ROOT = Path(__file__).resolve().parents[1]
DIM, ROWS = 64, 256  # one batch: 256 x 64 fp16 = 32 KiB
MODEL = ModelInfo("clip-kill-test", "k" * 64)

CHILD = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from runtime.retrieval.store import IndexStore, ModelInfo

    path, batches, pause_after = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    DIM, ROWS = {dim}, {rows}

    def batch(b):
        v = np.random.default_rng(b).standard_normal((ROWS, DIM)).astype(np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        return v, [dict(content_hash=f"{{b}}-{{i}}", path=f"/frames/{{b}}/{{i}}.jpg", frame_time=b + i / ROWS) for i in range(ROWS)]

    class Store(IndexStore):
        commits = 0

        def _insert_rows(self, start, rows):
            # Optional pause in the crash window: new vectors are on disk, their rows not committed.
            if pause_after >= 0 and self.commits >= pause_after:
                print(f"fsynced {{start + len(rows)}}", flush=True)
                time.sleep(120)
            super()._insert_rows(start, rows)
            self.commits += 1

    with Store(path, dim=DIM, model_info=ModelInfo({name!r}, {digest!r}), mode="a") as store:
        for b in range(batches):
            store.add(*batch(b))
            print(f"committed {{len(store)}}", flush=True)
    print("done", flush=True)
    """
).format(dim=DIM, rows=ROWS, name=MODEL.name, digest=MODEL.spec_digest)


def expected_batch(b: int) -> np.ndarray:
    v = np.random.default_rng(b).standard_normal((ROWS, DIM)).astype(np.float32)
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float16)


def start_child(script: Path, index: Path, batches: int, pause_after: int = -1) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, str(script), str(index), str(batches), str(pause_after)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
    )


def read_until(proc: subprocess.Popen, stop) -> list:
    """Lines of the child's stdout up to and including the first for which stop(line) holds."""
    lines = []
    for line in proc.stdout:
        lines.append(line.strip())
        if stop(lines[-1]):
            return lines
    proc.wait(timeout=30)
    raise AssertionError(f"child ended early (rc {proc.returncode}): {lines[-3:]} {proc.stderr.read()[-2000:]}")


def check_committed(index: Path, at_least: int) -> int:
    """Reopen read-only: every committed row has its metadata and exactly the vector that was added."""
    with IndexStore(index, model_info=MODEL) as store:
        n = len(store)
        assert n >= at_least and n % ROWS == 0, (n, at_least)
        vectors = np.asarray(store.vectors())
        for b in range(n // ROWS):
            np.testing.assert_array_equal(vectors[b * ROWS : (b + 1) * ROWS], expected_batch(b))
        items = store.items(range(n))
        assert [it["content_hash"] for it in items] == [f"{b}-{i}" for b in range(n // ROWS) for i in range(ROWS)]
        assert items[-1]["path"] == f"/frames/{n // ROWS - 1}/{ROWS - 1}.jpg"
    return n


def resume_to_end(script: Path, index: Path, batches: int) -> None:
    """Rerun the whole ingest from batch 0: committed batches are skipped by content hash."""
    proc = start_child(script, index, batches)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    assert out.split("\n")[-2] == "done"
    n = check_committed(index, batches * ROWS)
    assert n == batches * ROWS  # nothing added twice
    with IndexStore(index) as store:
        assert len({it["content_hash"] for it in store.items(range(n))}) == n
    assert (index / VECTORS_FILE).stat().st_size == n * DIM * 2


@pytest.fixture
def script(tmp_path) -> Path:
    path = tmp_path / "ingest_child.py"
    path.write_text(CHILD)
    return path


def test_sigkill_during_a_free_running_add_loop(tmp_path, script):
    """Killed wherever it happens to be after 8 reported commits (mid-add or between adds)."""
    index = tmp_path / "idx"
    proc = start_child(script, index, batches=100_000)  # would run for hours: only the kill ends it
    lines = read_until(proc, lambda s: s == f"committed {8 * ROWS}")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    last_reported = int(lines[-1].split()[1])
    committed = check_committed(index, at_least=last_reported)
    tail_rows = (index / VECTORS_FILE).stat().st_size // (DIM * 2) - committed
    print(f"killed after {last_reported} reported, {committed} committed, {tail_rows} orphan rows on disk")
    # Whatever the child wrote past the commits is at most one batch (the add in flight).
    assert committed * DIM * 2 <= (index / VECTORS_FILE).stat().st_size <= (committed + ROWS) * DIM * 2
    resume_to_end(script, index, batches=committed // ROWS + 4)


def test_sigkill_between_vector_fsync_and_commit(tmp_path, script):
    """Deterministic crash window: 5 batches commit, the 6th is on disk but not committed."""
    index = tmp_path / "idx"
    proc = start_child(script, index, batches=100, pause_after=5)
    lines = read_until(proc, lambda s: s.startswith("fsynced"))
    assert lines == [f"committed {b * ROWS}" for b in range(1, 6)] + [f"fsynced {6 * ROWS}"]
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    vec_file = index / VECTORS_FILE
    assert vec_file.stat().st_size == 6 * ROWS * DIM * 2  # the orphan batch really is on disk

    assert check_committed(index, at_least=5 * ROWS) == 5 * ROWS  # ...and invisible to readers
    assert vec_file.stat().st_size == 6 * ROWS * DIM * 2  # readers leave the file alone
    with IndexStore(index, model_info=MODEL, mode="a") as writer:  # the next writer cuts the tail
        assert len(writer) == 5 * ROWS and vec_file.stat().st_size == 5 * ROWS * DIM * 2
    resume_to_end(script, index, batches=9)


def test_ctrl_c_between_vector_fsync_and_commit(tmp_path, script):
    """SIGINT in the same window: KeyboardInterrupt unwinds add(), which drops its own tail."""
    index = tmp_path / "idx"
    proc = start_child(script, index, batches=100, pause_after=3)
    read_until(proc, lambda s: s.startswith("fsynced"))
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode != 0 and "KeyboardInterrupt" in err
    assert (index / VECTORS_FILE).stat().st_size == 3 * ROWS * DIM * 2
    assert check_committed(index, at_least=3 * ROWS) == 3 * ROWS
    resume_to_end(script, index, batches=5)
