"""edge-mm-run as a user meets it: errors (one line, exit 2), config files, defaults, Ctrl-C, and
the promise that the runtime never imports torch or export."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from runtime_support import ROOT, count_video_frames, read_events

from runtime.cli import DEFAULT_MODEL_DIR, main


def run_cli(*args, cwd=None, env=None, timeout=120):
    """edge-mm-run in a fresh interpreter, as the console script runs it."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    full_env.pop("DISPLAY", None)
    cmd = [sys.executable, "-c", "import sys; from runtime.cli import main; sys.exit(main())", *map(str, args)]
    return subprocess.run(cmd, cwd=cwd or ROOT, env=full_env, capture_output=True, text=True, timeout=timeout)


def one_line_error(done) -> str:
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    lines = [ln for ln in done.stderr.splitlines() if ln.strip() and not ln.startswith("warning:")]
    assert len(lines) == 1, done.stderr  # one line, no traceback
    assert lines[0].startswith("error: ")
    return lines[0]


# -- errors a user meets ------------------------------------------------------------------------


def test_missing_default_artifact_names_the_exact_build_command(tmp_path):
    done = run_cli("--camera", "synthetic", "--frames", "1", cwd=tmp_path, env={"EDGE_MM_MODEL": ""})
    line = one_line_error(done)
    assert f"python -m export.build_engine --model cdinet-s --out {DEFAULT_MODEL_DIR}" in line


def test_model_from_the_environment(tmp_path, capsys, monkeypatch, oracle_artifact):
    monkeypatch.setenv("EDGE_MM_MODEL", str(oracle_artifact))
    assert main(["--print-config"]) == 0
    assert f'model = "{oracle_artifact}"' in capsys.readouterr().out


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_onnx_is_a_one_line_error_with_the_rebuild_command(cdinet_artifact, tmp_path, damage):
    broken = tmp_path / "cdinet-s"
    broken.mkdir()
    data = (cdinet_artifact / "model.onnx").read_bytes()
    (broken / "model.onnx").write_bytes(os.urandom(4096) if damage == "garbage" else data[: len(data) // 2])
    line = one_line_error(run_cli("--model", broken, "--camera", "synthetic", "--frames", "1", "--headless"))
    assert "python -m export.build_engine" in line and str(broken) in line


def test_recording_that_does_not_exist(oracle_artifact, tmp_path):
    line = one_line_error(
        run_cli(
            "--model",
            oracle_artifact,
            "--camera",
            f"recording:{tmp_path / 'nope.db3'}",
            "--headless",
            "--stats",
            tmp_path / "s.json",
        )
    )
    assert "does not exist" in line
    assert not (tmp_path / "s.json").exists()  # nothing ran, so no stats file claims otherwise


def test_recording_without_a_depth_stream(oracle_artifact, tmp_path):
    pytest.importorskip("pyrealsense2", reason="pyrealsense2 does not import here")
    from data_gen import write_rs_recording

    path = tmp_path / "colour_only.db3"
    write_rs_recording(path, frames=3, with_depth=False)
    line = one_line_error(run_cli("--model", oracle_artifact, "--camera", f"recording:{path}", "--headless"))
    assert "no depth" in line


def test_no_camera_connected(oracle_artifact):
    from runtime.cli import realsense_present

    if realsense_present()[0]:
        pytest.skip("a RealSense camera is connected here")
    line = one_line_error(run_cli("--model", oracle_artifact, "--camera", "realsense", "--headless", "--frames", "1"))
    assert "no RealSense camera found" in line


def test_forcing_tensorrt_without_an_engine_is_an_error(oracle_artifact):
    line = one_line_error(
        run_cli("--model", oracle_artifact, "--backend", "tensorrt", "--camera", "synthetic", "--frames", "1")
    )
    assert "--backend tensorrt" in line and f"edge-mm-engine build {oracle_artifact}" in line


def test_window_required_where_none_can_open(oracle_artifact):
    line = one_line_error(run_cli("--model", oracle_artifact, "--window", "--camera", "synthetic", "--frames", "1"))
    assert "--window" in line and "--headless" in line


def test_bad_flag_values_are_one_line_errors(capsys, oracle_artifact):
    for argv in (
        ["--threshold", "1.5"],
        ["--frames", "0"],
        ["--backend", "cuda"],
        ["--serve", "localhost:http"],
        ["--out", "x.gif"],
        ["--camera", "webcam"],
    ):
        assert main(["--model", str(oracle_artifact), "--headless", *argv]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err, (argv, err)


# -- configuration ------------------------------------------------------------------------------


def test_toml_config_is_used_and_flags_override_it(tmp_path, capsys, oracle_artifact):
    config = tmp_path / "run.toml"
    config.write_text(
        f'model = "{oracle_artifact}"\ncamera = "synthetic:4"\nthreshold = 0.7\nheadless = true\n'
        "stats-interval = 1.5\nframes = 9\n\n[source]\ngenerator_options = {max_objects = 1}\n"
    )
    assert main(["--config", str(config), "--frames", "3", "--print-config"]) == 0
    text = capsys.readouterr().out
    assert 'camera = "synthetic:4"' in text and "threshold = 0.7" in text and "headless = true" in text
    assert "frames = 3" in text  # the flag beats the file
    assert "stats-interval = 1.5" in text and "[source]" in text
    # ...and a real run honours both, including the [source] table.
    rc = main(["--config", str(config), "--frames", "3", "--events", str(tmp_path / "e.jsonl"), "--quiet"])
    assert rc == 0 and len(read_events(tmp_path / "e.jsonl")) == 3


@pytest.mark.parametrize(
    "body, words",
    [
        ("colour = 'x'\n", "unknown key 'colour'"),
        ("frames = 'ten'\n", "frames"),
        ("headless = 1\n", "true or false"),
        ("backend = 'cuda'\n", "not one of"),
        ("frames = \n", "not valid TOML"),
        ("source = 3\n", "[source]"),
    ],
)
def test_bad_config_files(tmp_path, capsys, body, words):
    config = tmp_path / "bad.toml"
    config.write_text(body)
    assert main(["--config", str(config), "--print-config"]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and str(config) in err and "\n" not in err


def test_unknown_source_option_in_config(tmp_path, capsys, oracle_artifact):
    config = tmp_path / "c.toml"
    config.write_text("[source]\nexposure = 3\n")
    assert (
        main(
            [
                "--config",
                str(config),
                "--model",
                str(oracle_artifact),
                "--camera",
                "synthetic",
                "--headless",
                "--frames",
                "1",
            ]
        )
        == 2
    )
    assert "exposure" in capsys.readouterr().err


# -- defaults -----------------------------------------------------------------------------------


def test_embedded_default_writes_video_events_and_stats_under_runs(tmp_path, oracle_artifact):
    """No display, no camera, nothing configured: synthetic scenes, a bounded run, outputs in runs/."""
    from runtime.cli import realsense_present

    if realsense_present()[0]:
        pytest.skip("a RealSense camera is connected here, so --camera auto would use it")
    (tmp_path / "artifacts").mkdir()
    os.symlink(oracle_artifact, tmp_path / DEFAULT_MODEL_DIR)
    done = run_cli("--frames", "4", "--size", "160x120", "--threads", "1", cwd=tmp_path, env={"EDGE_MM_MODEL": ""})
    assert done.returncode == 0, done.stderr
    assert "camera: synthetic scenes" in done.stdout and "headless:" in done.stdout
    run_dirs = list((tmp_path / "runs").iterdir())
    assert len(run_dirs) == 1
    assert "wrote: " in done.stdout and str(Path("runs") / run_dirs[0].name / "annotated.mp4") in done.stdout
    assert count_video_frames(run_dirs[0] / "annotated.mp4") == 4
    assert len(read_events(run_dirs[0] / "events.jsonl")) == 4
    assert json.loads((run_dirs[0] / "stats.json").read_text())["frames"] == 4


# -- Ctrl-C -------------------------------------------------------------------------------------


def test_ctrl_c_closes_every_output_cleanly(oracle_artifact, tmp_path):
    video, events, stats = tmp_path / "o.mp4", tmp_path / "e.jsonl", tmp_path / "s.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("DISPLAY", None)
    cmd = [
        sys.executable,
        "-c",
        "import sys; from runtime.cli import main; sys.exit(main())",
        "--model",
        str(oracle_artifact),
        "--camera",
        "synthetic",
        "--frames",
        "100000",
        "--size",
        "160x120",
        "--threads",
        "1",
        "--headless",
        "--out",
        str(video),
        "--events",
        str(events),
        "--stats",
        str(stats),
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not events.exists() or len(events.read_text().splitlines()) < 5):
            time.sleep(0.1)
        assert events.exists(), "the run never produced a frame"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in err
    assert "stopped (interrupted)" in out
    rows = read_events(events)  # every line complete JSON
    summary = json.loads(stats.read_text())
    assert summary["stop_reason"] == "interrupted" and summary["complete"] is True
    assert summary["frames"] == len(rows) == count_video_frames(video) >= 5
    assert [r["index"] for r in rows] == list(range(len(rows)))
    assert not list(tmp_path.glob(".*partial*"))


# -- what the runtime imports -------------------------------------------------------------------


def test_runtime_runs_a_pipeline_without_importing_torch_or_export(oracle_artifact, tmp_path):
    code = (
        "import sys\n"
        "from runtime.cli import main\n"
        f"rc = main(['--model', {str(oracle_artifact)!r}, '--camera', 'synthetic', '--frames', '3', '--size', '96x64',"
        f" '--headless', '--quiet', '--out', {str(tmp_path / 'o.mp4')!r}, '--serve', '127.0.0.1:0'])\n"
        "assert rc == 0, rc\n"
        "import runtime.backends.select, runtime.backends.trt.runner, runtime.sinks.window, runtime.config\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'export', 'torchvision', 'onnx'))\n"
        "print('BAD', bad)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("DISPLAY", None)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "BAD []" in done.stdout, done.stdout
