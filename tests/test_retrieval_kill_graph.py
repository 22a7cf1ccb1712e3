"""Kill (SIGKILL) a process that adds to an index and saves its search graph, or compacts it.

Whatever the moment of the kill, the index must open and answer correctly: every committed row is
found by the graph search (a query equal to a stored vector finds that row first), no removed row
is returned, and the next open reuses, extends or rebuilds the graph as its state requires.
"""

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from edge_mm.errors import BackendError
from runtime.retrieval import ExactIndex, IndexStore, ModelInfo, ann, open_search_index, recall_at_k

try:
    ann.import_usearch()
except BackendError:
    pytest.skip("the graph backend needs usearch (edge-mm[retrieval])", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[1]
DIM, ROWS = 32, 200
MODEL = ModelInfo("clip-kill-test", "k" * 64)

HEADER = textwrap.dedent(
    """
    import contextlib, sys, time
    import numpy as np
    from runtime.retrieval import ann
    from runtime.retrieval.compact import compact
    from runtime.retrieval.store import IndexStore, ModelInfo

    DIM, ROWS = {dim}, {rows}
    MODEL = ModelInfo({name!r}, {digest!r})

    def batch(b):
        v = np.random.default_rng(b).standard_normal((ROWS, DIM)).astype(np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        return v, [dict(content_hash=f"{{b}}-{{i}}", path=f"/f/{{b}}/{{i}}.jpg") for i in range(ROWS)]
    """
).format(dim=DIM, rows=ROWS, name=MODEL.name, digest=MODEL.spec_digest)

ADD_AND_SAVE = HEADER + textwrap.dedent(
    """
    path, batches, pause_in_save = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    real_atomic_path = ann.atomic_path

    @contextlib.contextmanager
    def slow_atomic_path(final):
        # Pause in the save's crash window: the new graph is written beside the old, not renamed in.
        with real_atomic_path(final) as tmp:
            yield tmp
            if saves >= pause_in_save >= 0:
                print("graph written", flush=True)
                time.sleep(120)

    ann.atomic_path = slow_atomic_path
    saves = 0
    with IndexStore(path, dim=DIM, model_info=MODEL, mode="a") as store:
        for b in range(batches):
            store.add(*batch(b))
            print(f"committed {len(store)}", flush=True)
            graph = ann.GraphIndex(store)  # load + extend (or build) + save, as `edge-mm-index add` does
            saves += 1
            print(f"saved {graph.covered} {graph.last_action}", flush=True)
    print("done", flush=True)
    """
)

COMPACT = HEADER + textwrap.dedent(
    """
    path, pause_at = sys.argv[1], sys.argv[2]

    def at_step(step):
        print(step, flush=True)
        if step == pause_at:
            time.sleep(120)

    compact(path, progress=False, at_step=at_step)
    print("done", flush=True)
    """
)


def start(script: Path, *args) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, str(script), *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
    )


def read_until(proc: subprocess.Popen, stop) -> list:
    lines = []
    for line in proc.stdout:
        lines.append(line.strip())
        if stop(lines[-1]):
            return lines
    proc.wait(timeout=30)
    raise AssertionError(f"child ended early (rc {proc.returncode}): {lines[-3:]} {proc.stderr.read()[-2000:]}")


def kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def expected(b: int) -> np.ndarray:
    v = np.random.default_rng(b).standard_normal((ROWS, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def check_answers(index: Path) -> tuple:
    """Open the index and its graph as a reader; every committed, live row finds itself first."""
    with IndexStore(index, model_info=MODEL) as store:
        n = len(store)
        graph = open_search_index(store, "ann")
        action = graph.last_action
        live = np.setdiff1d(np.arange(n), store.deleted_ids())
        stored = np.asarray(store.vectors(), np.float32)
        probe = live[:: max(1, len(live) // 100)]
        scores, ids = graph.search(stored[probe], 5)
        assert (ids[:, 0] == probe).all()
        assert not np.isin(ids, store.deleted_ids()).any()
        exact = ExactIndex(store).search(stored[probe], 5)[1]
        assert recall_at_k(ids, exact, 5) >= 0.95
        assert graph.covered == n
    return n, action


@pytest.fixture
def scripts(tmp_path):
    (tmp_path / "add_and_save.py").write_text(ADD_AND_SAVE)
    (tmp_path / "compact.py").write_text(COMPACT)
    return tmp_path


def test_sigkill_anywhere_in_an_add_then_graph_save_loop(tmp_path, scripts):
    index = tmp_path / "idx"
    proc = start(scripts / "add_and_save.py", index, 100_000, -1)
    lines = read_until(proc, lambda s: s.startswith("committed") and int(s.split()[1]) >= 6 * ROWS)
    kill(proc)  # wherever it is: mid-add, mid-extend or mid-save
    assert any(s.startswith("saved") for s in lines)
    n, _ = check_answers(index)
    assert n >= 6 * ROWS and n % ROWS == 0
    with IndexStore(index, model_info=MODEL) as store:
        np.testing.assert_array_equal(np.asarray(store.vectors()[:ROWS]), expected(0).astype(np.float16))


def test_sigkill_inside_a_graph_save(tmp_path, scripts):
    """The new graph file is written but not renamed in: the old graph stays and is extended on open."""
    index = tmp_path / "idx"
    proc = start(scripts / "add_and_save.py", index, 100, 3)
    lines = read_until(proc, lambda s: s == "graph written")
    kill(proc)
    assert lines == [
        f"committed {ROWS}",
        f"saved {ROWS} built",
        f"committed {2 * ROWS}",
        f"saved {2 * ROWS} extended",
        f"committed {3 * ROWS}",
        f"saved {3 * ROWS} extended",
        f"committed {4 * ROWS}",
        "graph written",
    ]
    n, action = check_answers(index)
    assert (n, action) == (4 * ROWS, "extended")  # the graph of 3 batches was kept and extended
    with IndexStore(index, model_info=MODEL) as store:
        assert open_search_index(store, "ann").last_action == "loaded"  # ...and saved by that open


def _index_with_removals(tmp_path: Path, scripts: Path) -> Path:
    index = tmp_path / "idx"
    proc = start(scripts / "add_and_save.py", index, 4, -1)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    with IndexStore(index, model_info=MODEL, mode="a") as store:
        assert store.remove(range(ROWS, 2 * ROWS)) == ROWS  # the whole second batch
        store.add(expected(9)[:1], [{"content_hash": "x", "path": "/x.jpg", "thumbnail": b"\xff\xd8\xff\xe0thumb"}])
    return index


def _check_compacted(index: Path) -> None:
    with IndexStore(index, model_info=MODEL) as store:
        assert len(store) == 3 * ROWS + 1 and store.deleted_ids().size == 0
        want = np.concatenate([expected(0), expected(2), expected(3), expected(9)[:1]]).astype(np.float16)
        np.testing.assert_array_equal(np.asarray(store.vectors()), want)
        items = store.items([0, ROWS, 3 * ROWS])
        assert [it["content_hash"] for it in items] == ["0-0", "2-0", "x"]
        assert store.thumbnail(3 * ROWS) == b"\xff\xd8\xff\xe0thumb"
    check_answers(index)


def _check_uncompacted(index: Path) -> None:
    with IndexStore(index, model_info=MODEL) as store:
        assert len(store) == 4 * ROWS + 1
        assert store.deleted_ids().tolist() == list(range(ROWS, 2 * ROWS))
    check_answers(index)


@pytest.mark.parametrize("pause_at", ["built", "moved-aside"])
def test_sigkill_during_compact(tmp_path, scripts, pause_at):
    """Killed with the new index complete: before the renames it rolls back, between them forward."""
    index = _index_with_removals(tmp_path, scripts)
    proc = start(scripts / "compact.py", index, pause_at)
    read_until(proc, lambda s: s == pause_at)
    kill(proc)
    assert index.exists() == (pause_at == "built")
    if pause_at == "built":
        _check_uncompacted(index)
        proc = start(scripts / "compact.py", index, "never")  # compacting again finishes the job
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0 and out.endswith("done\n"), err[-2000:]
    _check_compacted(index)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".idx")) == []
