"""Bad input, class by class (issue 17), through the real console commands as subprocesses.

Every refusal is checked for: exit code 2, one stderr line that names the problem and the fix, and
a folder tree that did not change (nothing written, nothing replaced, nothing left behind). The
inputs are fail-fast: tiny fake artifacts for the layout checks, the three-node depth-oracle
artifact where frames must really run, and a handful of synthetic frames.
"""

from __future__ import annotations

import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from bad_input_support import (
    assert_one_line_error,
    popen,
    run,
    tree_state,
    write_fake_clip_artifact,
    write_fake_saliency_artifact,
)

from edge_mm.artifact_kind import path_kind

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
def work(tmp_path):
    """A working folder with a CLIP artifact, a saliency artifact, an unrelated text file and an image."""
    import cv2

    write_fake_clip_artifact(tmp_path / "clip")
    write_fake_saliency_artifact(tmp_path / "cdinet")
    (tmp_path / "notes.txt").write_text("my notes, not an output of edge-mm\n")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "thesis.tex").write_text("\\documentclass{article}\n")
    cv2.imwrite(str(tmp_path / "photo.png"), np.full((32, 32, 3), 127, np.uint8))
    return tmp_path


@pytest.fixture(scope="module")
def oracle(tmp_path_factory):
    from runtime_support import depth_oracle_artifact

    return depth_oracle_artifact(tmp_path_factory.mktemp("oracle") / "oracle", size=32)


def refused(work: Path, command: str, args, *fragments: str) -> str:
    """Run, expect a one-line refusal, and show that nothing under `work` changed."""
    before = tree_state(work)
    outcome = run(command, args, work)
    line = assert_one_line_error(outcome, *fragments)
    assert tree_state(work) == before, f"{command} {args} changed files although it refused"
    return line


def suggested_commands(line: str):
    return [shlex.split(m) for m in re.findall(r"`([^`]+)`", line)]


def assert_build_suggestions_are_safe(line: str, work: Path) -> None:
    """A suggested build_engine command may only write onto nothing, or onto an artifact of its family."""
    from edge_mm.artifact_kind import artifact_family

    for words in suggested_commands(line):
        if "export.build_engine" not in words:
            continue
        out = work / words[words.index("--out") + 1]
        model = words[words.index("--model") + 1]
        assert path_kind(out).kind in ("missing", "empty", artifact_family(model)), (line, path_kind(out))


# -- 1. a suggested fix that destroys data -----------------------------------------------------------


KIND_MISMATCH = [
    (
        "edge-mm-run",
        ["--model", "clip", "--camera", "synthetic", "--frames", "1", "--headless", "--out", "o.mp4"],
        ["clip is a CLIP artifact (image/ and text/)", "--model takes a saliency", "CLIP goes to --clip"],
    ),
    (
        "edge-mm-run",
        ["--model", "cdinet", "--clip", "cdinet", "--labels", "mug", "--camera", "synthetic", "--headless"],
        ["cdinet is a saliency (CDINet) artifact", "--clip takes a CLIP artifact"],
    ),
    (
        "edge-mm-index",
        ["add", "--index", "idx", "--model", "clip", "--saliency", "clip", "photo.png"],
        ["clip is a CLIP artifact", "--saliency takes a saliency"],
    ),
    (
        "edge-mm-index",
        ["add", "--index", "idx", "--model", "cdinet", "photo.png"],
        ["cdinet is a saliency (CDINet) artifact", "--model takes a CLIP artifact"],
    ),
    ("build_engine", ["--model", "cdinet-s", "--out", "clip", "--no-engine"], ["clip is a CLIP artifact", "--force"]),
    (
        "build_engine",
        ["--model", "clip-demo", "--out", "cdinet", "--no-engine"],
        ["saliency (CDINet) artifact", "--force"],
    ),
    ("build_engine", ["--model", "clip-demo", "--out", "clip/image", "--no-engine"], ["one graph folder", "above it"]),
]


@pytest.mark.parametrize(
    "command,args,fragments", KIND_MISMATCH, ids=[f"{c}-{i}" for i, (c, _, _) in enumerate(KIND_MISMATCH)]
)
def test_kind_mismatch_says_what_the_path_holds_and_suggests_no_build(work, command, args, fragments):
    line = refused(work, command, args, *fragments)
    assert "build_engine" not in line  # nothing to build: the path holds something else
    assert not (work / "idx").exists()  # no empty index left behind


@pytest.mark.parametrize(
    "command,args",
    [
        ("edge-mm-run", ["--model", "artifacts/none", "--camera", "synthetic", "--headless"]),
        ("edge-mm-run", ["--model", "cdinet", "--clip", "no-clip-here", "--labels", "mug", "--headless"]),
        ("edge-mm-index", ["add", "--index", "idx", "--model", "no-clip-here", "photo.png"]),
    ],
)
def test_every_suggested_build_is_safe_to_run_as_printed(work, command, args):
    line = refused(work, command, args, "build it with `python -m export.build_engine")
    assert_build_suggestions_are_safe(line, work)


# -- 2. outputs that collide -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "outputs,fragment",
    [
        (["--out", "same.mp4", "--events", "same.mp4"], "--out and --events both name same.mp4"),
        (["--events", "x", "--stats", "x"], "--events and --stats both name x"),
        (["--out", "a.mp4", "--stats", "./a.mp4"], "--out and --stats both name ./a.mp4"),
        (["--stats", "s.json", "--snapshot-dir", "s.json"], "--stats and --snapshot-dir"),
        (["--stats", "run.toml", "--config", "run.toml"], "--config and --stats both name run.toml"),
    ],
)
def test_two_outputs_on_one_path_are_refused_up_front(work, oracle, outputs, fragment):
    (work / "run.toml").write_text("quiet = true\n")
    args = ["--model", oracle, "--camera", "synthetic", "--frames", "2", "--size", "64x48", "--headless", *outputs]
    refused(work, "edge-mm-run", args, fragment, "give each output its own path")


def test_two_runs_on_one_out_leave_one_complete_video(tmp_path, oracle):
    from runtime_support import count_video_frames

    frames = 24
    args = ["--model", oracle, "--camera", "synthetic", "--frames", frames, "--size", "64x48", "--headless"]
    args += ["--out", "same.mp4", "--quiet", "--stats-interval", "0"]
    runs = [popen("edge-mm-run", args, tmp_path) for _ in range(2)]
    results = [(p.wait(timeout=300), *p.communicate()) for p in runs]
    for code, _out, err in results:
        assert code in (0, 2), err  # each run either wrote a whole video or refused in one line
        if code == 2:
            assert len(err.strip().splitlines()) == 1, err
    assert any(code == 0 for code, _, _ in results)
    assert count_video_frames(tmp_path / "same.mp4") == frames  # complete: every frame decodes
    assert not list(tmp_path.glob(".same*"))  # no partial file left by either writer


def test_wrote_names_only_what_this_run_produced(tmp_path):
    from edge_mm.outputs import WrittenCheck

    old, fresh, absent = tmp_path / "old.jsonl", tmp_path / "new.mp4", tmp_path / "never.json"
    old.write_text('{"from": "an earlier run"}\n')
    check = WrittenCheck([old, fresh, absent])
    fresh.write_bytes(b"\x00\x00\x00\x18ftypmp42")  # this run's output
    assert check.written() == [str(fresh)]  # the earlier run's file is not reported as written now


# -- 3. overwriting what is not ours -----------------------------------------------------------------


NOT_OURS = [
    (
        "calib.build",
        ["--model", "cdinet-s", "--count", "1", "--out", "notes.txt"],
        "--out notes.txt exists and is not a calibration set",
    ),
    (
        "edge-mm-run",
        ["--model", "cdinet", "--out", "notes.mp4", "--headless"],
        "--out notes.mp4 exists and is not a video",
    ),
    (
        "edge-mm-run",
        ["--model", "cdinet", "--events", "notes.txt", "--headless"],
        "--events notes.txt exists and is not an events log",
    ),
    (
        "edge-mm-run",
        ["--model", "cdinet", "--stats", "notes.txt", "--headless"],
        "--stats notes.txt exists and is not a stats file",
    ),
    (
        "build_engine",
        ["--model", "cdinet-s", "--out", "foreign", "--no-engine"],
        "--out foreign is a non-empty folder that is not an edge-mm artifact",
    ),
    (
        "edge-mm-index",
        ["add", "--index", "foreign", "--model", "clip", "photo.png"],
        "--index foreign is a folder that does not hold an edge-mm-index index",
    ),
    (
        "edge-mm-train",
        ["cdinet", "--data", "synthetic", "--out", "foreign"],
        "--out foreign is a folder that does not hold an edge-mm-train run",
    ),
    (
        "edge-mm-eval",
        ["cdinet", "--data", "synthetic", "--out", "foreign"],
        "--out foreign is a folder that does not hold an edge-mm-eval result",
    ),
]


@pytest.mark.parametrize("command,args,fragment", NOT_OURS, ids=[f"{c}-{i}" for i, (c, _, _) in enumerate(NOT_OURS)])
def test_a_file_that_is_not_ours_is_not_replaced(work, command, args, fragment):
    (work / "notes.mp4").write_text("not a video\n")
    refused(work, command, args, fragment, "--force")


def test_force_replaces_and_the_tools_own_output_is_replaced_without_it(work):
    first = run(
        "calib.build", ["--model", "cdinet-s", "--count", "1", "--out", "notes.txt", "--force", "--quiet"], work
    )
    assert first.code == 0, first.stderr
    before = tree_state(work, skip=[work / "notes.txt"])
    again = run("calib.build", ["--model", "cdinet-s", "--count", "2", "--out", "notes.txt", "--quiet"], work)
    assert again.code == 0, again.stderr  # now a calibration set: ours to replace
    assert tree_state(work, skip=[work / "notes.txt"]) == before  # nothing else changed or was left behind
    from calib.store import read_set

    assert read_set(work / "notes.txt").count == 2


# -- 4. validation after the work --------------------------------------------------------------------


CHECKED_FIRST = [
    ("edge-mm-train", ["cdinet", "--data", "synthetic", "--out", "notes.txt"], "--out notes.txt is a file"),
    (
        "edge-mm-eval",
        ["cdinet", "--data", "synthetic", "--weights", "random", "--out", "notes.txt"],
        "--out notes.txt is a file",
    ),
    ("edge-mm-run", ["--model", "cdinet", "--stats", "foreign", "--headless"], "--stats foreign is a folder"),
    ("edge-mm-run", ["--model", "cdinet", "--out", "notes.txt/run.mp4", "--headless"], "notes.txt is a file"),
    ("calib.build", ["--model", "cdinet-s", "--out", "foreign"], "--out foreign is a folder"),
    ("edge-mm-index", ["add", "--index", "notes.txt", "--model", "clip", "photo.png"], "--index notes.txt is a file"),
]


@pytest.mark.parametrize(
    "command,args,fragment", CHECKED_FIRST, ids=[f"{c}-{i}" for i, (c, _, _) in enumerate(CHECKED_FIRST)]
)
def test_output_paths_are_checked_before_the_work(work, command, args, fragment):
    # The model and data are fake or unloadable on purpose: only a check made first can answer.
    refused(work, command, args, fragment)


# -- 5. tracebacks -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config,flags,fragment",
    [
        ('[source]\nseed = "abc"\n', [], "seed = 'abc' should be an integer"),
        ("[source]\ncount = -1\n", [], "count = -1 should be positive"),
        ("[source]\nsize = [100000, 100000]\n", [], "at most 4096 pixels a side"),
        ("[source]\nfps = true\n", [], "fps = True should be a number"),
        ("", ["--size", "100000x100000"], "width and height must be 16 to 4096"),
        ("", ["--size", "0x0"], "width and height must be 16 to 4096"),
        ("", ["--fps", "nan"], "'nan' must be a finite number"),
        ("", ["--out-fps", "1e300"], "'1e300' is above 1000 frames per second"),
        ("out-fps = inf\n", [], "'inf' must be a finite number"),
    ],
)
def test_bad_source_settings_are_one_line(work, oracle, config, flags, fragment):
    (work / "run.toml").write_text(config)
    args = ["--model", oracle, "--camera", "synthetic", "--config", "run.toml", "--headless", "--out", "o.mp4", *flags]
    refused(work, "edge-mm-run", args, fragment)


def test_build_engine_size_is_bounded_by_the_engines_profile(work):
    refused(
        work,
        "build_engine",
        ["--model", "cdinet-s", "--size", "100000", "--out", "new"],
        "--size 100000 is above",
    )


# -- 6. checkpoint messages --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bad_checkpoints(tmp_path_factory):
    import torch

    folder = tmp_path_factory.mktemp("checkpoints")
    (folder / "random.pth").write_bytes(np.random.default_rng(0).bytes(4096))
    torch.save({"model": _Pickled()}, folder / "pickled.pth")
    good = folder / "good.pth"
    torch.save({"w": torch.zeros(64, 64)}, good)
    (folder / "truncated.pth").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    return folder


class _Pickled:
    """A Python object inside a checkpoint: loading it would need unpickling code."""


@pytest.mark.parametrize(
    "model,name,fragment",
    [
        ("cdinet-s", "random.pth", "is not a checkpoint"),
        ("cdinet-s", "pickled.pth", "is a pickle that would run code when loaded"),
        ("cdinet-s", "truncated.pth", "is truncated"),
        (
            "clip-demo",
            "pickled.pth",
            "is a pickle that would run code when loaded",
        ),  # torch advised weights_only=False here
        ("clip-demo", "truncated.pth", "is truncated"),
    ],
)
def test_unloadable_checkpoints_are_described_in_our_words(work, bad_checkpoints, name, fragment, model):
    weights = bad_checkpoints / name
    line = refused(
        work, "build_engine", ["--model", model, "--weights", weights, "--out", "new", "--no-engine"], fragment
    )
    assert "weights_only" not in line and "Re-running" not in line and "torch.load" not in line


def test_a_pickled_last_pth_is_refused_on_resume(work, bad_checkpoints):
    run_dir = work / "run"
    run_dir.mkdir()
    (run_dir / "last.pth").write_bytes((bad_checkpoints / "pickled.pth").read_bytes())
    line = refused(
        work,
        "edge-mm-train",
        ["cdinet", "--data", "synthetic", "--out", "run", "--resume"],
        "a pickle that would run code",
    )
    assert "weights_only" not in line


# -- 7. wrong or useless fixes in messages -----------------------------------------------------------


def test_missing_index_suggests_a_command_that_parses(work):
    line = refused(work, "edge-mm-index", ["info", "--index", "missing"], "--index missing")
    (words,) = suggested_commands(line)
    from runtime.retrieval.cli import build_parser

    args = build_parser().parse_args(words[1:])  # the printed command is complete: it parses as printed
    assert args.index == "missing" and args.command == "add"


@pytest.mark.parametrize(
    "command,args,fragments",
    [
        (
            "edge-mm-index",
            ["search", "--index", "clip", "a mug"],
            ["--index clip is a CLIP artifact", "not a retrieval index"],
        ),
        ("edge-mm-index", ["info", "--index", "notes.txt"], ["--index notes.txt is a file", "not a retrieval index"]),
        (
            "edge-mm-run",
            ["--model", "cdinet/model.onnx", "--headless"],
            ["is a file", "the artifact folder that holds it"],
        ),
        ("edge-mm-run", ["--model", "clip/image", "--headless"], ["one graph folder of a CLIP artifact", "--clip"]),
    ],
)
def test_a_path_of_another_kind_is_named_for_what_it_holds(work, command, args, fragments):
    line = refused(work, command, args, *fragments)
    assert "build" not in line  # nothing to build: the path is there, it is the wrong thing


def test_folder_without_gt_names_the_fix_not_a_python_argument(work):
    for sub in ("RGB", "depth"):
        (work / "ds" / sub).mkdir(parents=True)
    line = refused(
        work, "edge-mm-eval", ["cdinet", "--data", "ds", "--weights", "random"], "no GT subfolder", "add GT/"
    )
    assert "with_gt" not in line


@pytest.mark.parametrize("model", ["cdinet-s", "clip-demo"])
def test_weights_that_are_a_folder_say_so(work, model):
    refused(work, "build_engine", ["--model", model, "--weights", "foreign", "--out", "new"], "foreign is a folder")


def test_an_index_of_other_weights_says_the_weights_differ(tmp_path):
    from edge_mm.errors import IndexStoreError
    from runtime.retrieval.store import IndexStore, ModelInfo

    made = ModelInfo("clip-demo", "d0d8" * 16, "a" * 64)
    with IndexStore(tmp_path / "idx", dim=4, model_info=made, mode="a"):
        pass
    other = ModelInfo("clip-demo", "d0d8" * 16, "b" * 64)
    with pytest.raises(IndexStoreError, match="with other weights") as info:
        IndexStore(tmp_path / "idx", model_info=other, mode="r")
    assert "aaaaaaaaaaaa" in str(info.value) and "bbbbbbbbbbbb" in str(info.value)


# -- 8. not one line ---------------------------------------------------------------------------------


USAGE = [
    (
        "build_engine",
        ["--model", "cdinet-s", "--out", "x", "--precision", "bogus"],
        "see python -m export.build_engine --help",
    ),
    ("calib.build", ["--model", "cdinet-s"], "see python -m calib.build --help"),
    ("edge-mm-run", ["--bogus"], "see edge-mm-run --help"),
    ("edge-mm-index", ["add"], "see edge-mm-index add --help"),
    ("edge-mm-engine", ["bogus"], "see edge-mm-engine --help"),
    ("edge-mm-train", [], "see edge-mm-train --help"),
    (
        "edge-mm-train",
        ["cdinet", "--epochs", "x", "--data", "synthetic", "--out", "o"],
        "see edge-mm-train cdinet --help",
    ),
    ("edge-mm-eval", ["cdinet"], "see edge-mm-eval cdinet --help"),
]


@pytest.mark.parametrize("command,args,fragment", USAGE, ids=[f"{c}-{i}" for i, (c, _, _) in enumerate(USAGE)])
def test_argparse_errors_are_one_line_with_help_pointer(work, command, args, fragment):
    refused(work, command, args, fragment)


def test_a_missing_query_image_is_one_line_without_opencv_warnings(work):
    from runtime.retrieval.store import IndexStore, ModelInfo

    with IndexStore(work / "idx", dim=4, model_info=ModelInfo("clip-demo", "0" * 64), mode="a"):
        pass
    refused(work, "edge-mm-index", ["search", "--index", "idx", "--image", "gone.jpg"], "--image gone.jpg is missing")


def test_library_warnings_stay_off_the_error_path(capsys):
    import warnings

    from edge_mm.cli_support import run_cli
    from edge_mm.errors import UsageError

    def failing(argv):
        warnings.warn("TypedStorage is deprecated", UserWarning, stacklevel=2)
        warnings.warn("You are using torch.load with weights_only=False", FutureWarning, stacklevel=2)
        raise UsageError("--thing is wrong; give another")

    def working(argv):
        warnings.warn("first line of a warning\nand its second line", UserWarning, stacklevel=2)
        return 0

    assert run_cli(failing, []) == 2
    assert capsys.readouterr().err == "error: --thing is wrong; give another\n"
    assert run_cli(working, []) == 0
    assert capsys.readouterr().err == "warning: first line of a warning\n"  # after success, one line each


# -- 9. stale temporaries, SIGTERM, streaming calibration --------------------------------------------


def _dead_pid() -> int:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    return gone.pid


def test_stale_temporaries_of_dead_writers_are_cleaned(work):
    dead = _dead_pid()
    stale_dir = work / f".set.calib.{dead}.k3j2.part"  # a SIGKILLed folder writer
    stale_dir.mkdir()
    (stale_dir / "model.onnx").write_bytes(b"half")
    stale_file = work / f".set.calib.{dead}.x9z1.part"
    stale_file.write_bytes(b"half")
    live = work / ".set.calib.1.a1b2.part"  # pid 1 is running: not ours to remove
    live.write_bytes(b"being written")
    outcome = run("calib.build", ["--model", "cdinet-s", "--count", "1", "--out", "set.calib", "--quiet"], work)
    assert outcome.code == 0, outcome.stderr
    assert not stale_dir.exists() and not stale_file.exists() and live.exists()


def test_atomic_dir_cleans_stale_folders_and_keeps_unique_names(tmp_path):
    from edge_mm.atomic import atomic_dir

    dead = _dead_pid()
    stale = tmp_path / f".art.{dead}.abcd1234.part"
    stale.mkdir()
    with atomic_dir(tmp_path / "art") as first:
        with atomic_dir(tmp_path / "art") as second:  # two writers of one target: two temporaries
            assert first != second
            (second / "b").write_text("second")
        (first / "a").write_text("first")
    assert not stale.exists()
    assert sorted(p.name for p in (tmp_path / "art").iterdir()) == ["a"]  # the last to finish wins, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]


def test_sigterm_exits_143_with_a_complete_video(tmp_path, oracle):
    from runtime_support import count_video_frames

    args = ["--model", oracle, "--camera", "synthetic", "--loop", "--fps", "20", "--size", "64x48", "--headless"]
    proc = popen("edge-mm-run", [*args, "--out", "run.mp4", "--stats-interval", "0"], tmp_path)
    for line in proc.stdout:  # wait until frames flow
        if line.startswith("running:"):
            break
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert count_video_frames(tmp_path / "run.mp4") >= 1


def test_calibration_sets_stream_to_the_file(tmp_path):
    """Memory holds one sample, whatever the count; the bytes are those of the all-in-memory writer."""
    import tracemalloc

    from calib.store import read_set, stream_set

    count, shape = 200, (3, 64, 64)  # 200 float32 samples: 9.8 MB held at once, 49 KB streamed
    drawn = []

    def samples():
        rng = np.random.default_rng(0)
        for i in range(count):
            drawn.append(i)
            yield {"rgb": rng.random(shape, dtype=np.float32)}

    tracemalloc.start()
    try:
        stream_set(tmp_path / "s.calib", samples(), count, {"kind": "cdinet"})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(drawn) == count and peak < 4_000_000, peak
    rng = np.random.default_rng(0)
    whole = np.stack([rng.random(shape, dtype=np.float32) for _ in range(count)])
    assert (tmp_path / "s.calib").read_bytes() == _set_bytes_held_in_memory(whole)  # the format did not change
    assert np.array_equal(read_set(tmp_path / "s.calib").arrays["rgb"], whole.astype(np.float16))


def _set_bytes_held_in_memory(rgb: np.ndarray) -> bytes:
    """A calibration set as the writer before streaming made it: zip entries built from whole arrays."""
    import io
    import json
    import zipfile

    stored = rgb.astype(np.float16)
    manifest = {
        "kind": "cdinet",
        "format": 1,
        "count": len(rgb),
        "arrays": {"rgb": {"shape": list(rgb.shape[1:]), "stored_dtype": "float16", "dtype": "float32"}},
    }
    npy = io.BytesIO()
    np.lib.format.write_array(npy, stored, allow_pickle=False)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in (
            ("manifest.json", json.dumps(manifest, sort_keys=True, indent=1).encode()),
            ("rgb.npy", npy.getvalue()),
        ):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)
    return buffer.getvalue()
