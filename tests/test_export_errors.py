"""Bad inputs to `python -m export.build_engine`: exit code 2, one line, nothing half-written."""

import subprocess
import sys

import pytest
import torch
from support import ROOT

from calib.sampling import sample
from calib.store import write_set
from edge_mm.clip.model import CLIP
from edge_mm.registry import cdinet_spec, clip_text_spec
from edge_mm.rgbd import RgbdPreprocess
from export import parity
from export.build_engine import cli

FAST = ["--size", "64", "--calib-count", "2", "--eval-count", "2", "--threads", "2", "--no-engine"]


def run(argv, capsys):
    code = cli(argv)
    captured = capsys.readouterr()
    return code, captured.err.strip()


def assert_nothing_written(parent, name):
    leftovers = [p.name for p in parent.iterdir() if p.name == name or p.name.startswith(f".{name}.")]
    assert leftovers == [], f"left behind: {leftovers}"


def one_line(err):
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def _tiny_clip_weights(tmp_path):
    torch.manual_seed(0)
    clip = CLIP(
        embed_dim=16,
        image_resolution=32,
        vision_layers=1,
        vision_width=64,
        vision_patch_size=16,
        context_length=77,
        vocab_size=49408,
        transformer_width=64,
        transformer_heads=1,
        transformer_layers=1,
    )
    weights = tmp_path / "clip.pt"
    torch.save(clip.state_dict(), weights)
    return str(weights)


def _cdinet_weights(tmp_path):
    from edge_mm.cdinet import build

    weights = tmp_path / "cdinet.pth"
    torch.save(build("cdinet-xs").state_dict(), weights)
    return str(weights)


def _calib_set(tmp_path, spec):
    path = write_set(
        tmp_path / "set.calib",
        sample(spec, "synthetic", 2, 0, progress=False),
        {"model": spec.name, "kind": spec.kind, "spec_digest": spec.digest()},
    )
    return str(path)


# Each case: the argv after `--out OUT` (a function of tmp_path), and the text the one-line error holds.
# Made for a 256x256 cdinet-s, used for a 64x64 export: another preprocessing, another digest.
CASES = {
    "unknown model": (
        lambda t: ["--model", "cdinet-xxl", "--weights", "random"],
        ["unknown model 'cdinet-xxl'", "cdinet-s"],
    ),
    "CLIP weights for CDINet": (
        lambda t: ["--model", "cdinet-s", "--weights", _tiny_clip_weights(t), *FAST],
        ["does not match CDINet", "missing key"],
    ),
    "weights of another CLIP": (
        lambda t: ["--model", "clip:ViT-B/32", "--weights", _tiny_clip_weights(t), "--no-engine"],
        ["is not a ViT-B/32 CLIP", "clip:custom"],
    ),
    "CDINet weights for CLIP": (
        lambda t: ["--model", "clip:custom", "--weights", _cdinet_weights(t), "--no-engine"],
        ["CLIP"],
    ),
    "missing weights file": (lambda t: ["--model", "cdinet", "--weights", str(t / "nope.pth")], ["does not exist"]),
    "calibration set for another spec": (
        lambda t: [
            "--model",
            "cdinet-s",
            "--weights",
            "random",
            *FAST,
            "--calib",
            _calib_set(t, cdinet_spec("cdinet-s", RgbdPreprocess(size=(256, 256)))),
        ],
        ["was made for", "calib.build"],
    ),
    "calibration set for another kind": (
        lambda t: [
            "--model",
            "cdinet-s",
            "--weights",
            "random",
            *FAST,
            "--calib",
            _calib_set(t, clip_text_spec("clip:ViT-B/32")),
        ],
        ["'clip-text' graph"],
    ),
    "size not a multiple of 16": (
        lambda t: ["--model", "cdinet-s", "--weights", "random", "--size", "70"],
        ["multiple of 16"],
    ),
    "max side not a multiple of 16": (
        lambda t: ["--model", "cdinet-s", "--weights", "random", "--max-side", "100"],
        ["multiple of 16"],
    ),
    "random CLIP of no known architecture": (
        lambda t: ["--model", "clip:custom", "--weights", "random"],
        ["known architecture"],
    ),
    "weights required without demo": (lambda t: ["--model", "cdinet"], ["--weights is required"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, case):
    make_argv, expected = CASES[case]
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    code, err = run(["--out", str(tmp_path / "a"), *make_argv(inputs)], capsys)
    assert code == 2 and all(text in one_line(err) for text in expected), err
    assert_nothing_written(tmp_path, "a")


def test_unknown_model_through_python_m(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "export.build_engine", "--model", "clip:ViT-H/99", "--out", str(tmp_path / "a")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 2 and proc.stderr.startswith("error: unknown model 'clip:ViT-H/99'")
    assert proc.stderr.count("\n") == 1


def _file(path):
    path.write_text("keep me")


def _foreign_folder(path):
    path.mkdir()
    (path / "notes.txt").write_text("keep me")


# --out onto something that is not an artifact: refused, and what was there is untouched.
OUT_CASES = {
    "a file": (lambda t: t / "a", _file, "is a file"),
    "under a file": (lambda t: t / "a" / "sub" / "x", lambda p: _file(p.parent.parent), "is a file"),
    "a foreign folder": (lambda t: t / "a", _foreign_folder, "not an edge-mm artifact"),
}


@pytest.mark.parametrize("case", list(OUT_CASES))
def test_out_onto_what_is_not_an_artifact(tmp_path, capsys, case):
    out_of, prepare, message = OUT_CASES[case]
    out = out_of(tmp_path)
    prepare(out)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    code, err = run(["--model", "cdinet-s", "--weights", "random", "--out", str(out), *FAST], capsys)
    assert code == 2 and message in one_line(err)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_failure_midway_leaves_no_half_artifact(tmp_path, capsys, monkeypatch):
    """A stage that fails after files were written (here: a parity gate nothing can pass) leaves
    neither a partial folder nor a temporary one; an older artifact at --out stays as it was."""
    out = tmp_path / "a"
    out.mkdir()
    (out / "report.json").write_text('{"old": true}')
    monkeypatch.setattr(parity, "CDINET_MAX_ABS", -1.0)
    code, err = run(["--model", "cdinet-s", "--weights", "random", "--out", str(out), *FAST], capsys)
    assert code == 2 and "does not match PyTorch" in one_line(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]
    assert (
        sorted(p.name for p in out.iterdir()) == ["report.json"]
        and (out / "report.json").read_text() == '{"old": true}'
    )
