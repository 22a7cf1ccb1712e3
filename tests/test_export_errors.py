"""Bad inputs to `python -m export.build_engine`: exit code 2, one line, nothing half-written."""

import subprocess
import sys

import pytest
import torch

from calib.sampling import sample
from calib.store import write_set
from edge_mm.clip.model import CLIP
from edge_mm.registry import cdinet_spec, clip_text_spec
from edge_mm.rgbd import RgbdPreprocess
from export import parity
from export.build_engine import cli
from tests.conftest import ROOT

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


def test_unknown_model(tmp_path, capsys):
    code, err = run(["--model", "cdinet-xxl", "--weights", "random", "--out", str(tmp_path / "a")], capsys)
    assert code == 2 and "unknown model 'cdinet-xxl'" in one_line(err) and "cdinet-s" in err
    assert_nothing_written(tmp_path, "a")


def test_unknown_model_through_python_m(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "export.build_engine", "--model", "clip:ViT-H/99", "--out", str(tmp_path / "a")],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and proc.stderr.startswith("error: unknown model 'clip:ViT-H/99'")
    assert proc.stderr.count("\n") == 1


def test_clip_weights_given_for_cdinet(tmp_path, capsys):
    torch.manual_seed(0)
    clip = CLIP(embed_dim=16, image_resolution=32, vision_layers=1, vision_width=64, vision_patch_size=16,
                context_length=77, vocab_size=49408, transformer_width=64, transformer_heads=1, transformer_layers=1)
    weights = tmp_path / "clip.pt"
    torch.save(clip.state_dict(), weights)
    code, err = run(["--model", "cdinet-s", "--weights", str(weights), "--out", str(tmp_path / "a"), *FAST], capsys)
    assert code == 2 and "does not match CDINet" in one_line(err) and "missing key" in err
    assert_nothing_written(tmp_path, "a")


def test_weights_of_another_clip_architecture(tmp_path, capsys):
    torch.manual_seed(0)
    clip = CLIP(embed_dim=16, image_resolution=32, vision_layers=1, vision_width=64, vision_patch_size=16,
                context_length=77, vocab_size=49408, transformer_width=64, transformer_heads=1, transformer_layers=1)
    weights = tmp_path / "clip.pt"
    torch.save(clip.state_dict(), weights)
    code, err = run(["--model", "clip:ViT-B/32", "--weights", str(weights), "--out", str(tmp_path / "a"), "--no-engine"], capsys)
    assert code == 2 and "is not a ViT-B/32 CLIP" in one_line(err) and "clip:custom" in err
    assert_nothing_written(tmp_path, "a")


def test_cdinet_weights_given_for_clip(tmp_path, capsys):
    from edge_mm.cdinet import build

    weights = tmp_path / "cdinet.pth"
    torch.save(build("cdinet-xs").state_dict(), weights)
    code, err = run(["--model", "clip:custom", "--weights", str(weights), "--out", str(tmp_path / "a"), "--no-engine"], capsys)
    assert code == 2 and "CLIP" in one_line(err)
    assert_nothing_written(tmp_path, "a")


def test_missing_weights_file(tmp_path, capsys):
    code, err = run(["--model", "cdinet", "--weights", str(tmp_path / "nope.pth"), "--out", str(tmp_path / "a")], capsys)
    assert code == 2 and "does not exist" in one_line(err)


def test_calibration_set_for_another_spec(tmp_path, capsys):
    # made for a 256x256 cdinet-s, used for a 64x64 export: another preprocessing, another digest
    spec = cdinet_spec("cdinet-s", RgbdPreprocess(size=(256, 256)))
    path = write_set(tmp_path / "wrong.calib", sample(spec, "synthetic", 2, 0, progress=False),
                     {"model": spec.name, "kind": spec.kind, "spec_digest": spec.digest()})
    code, err = run(["--model", "cdinet-s", "--weights", "random", "--calib", str(path), "--out", str(tmp_path / "a"), *FAST], capsys)
    assert code == 2 and "was made for" in one_line(err) and "calib.build" in err
    assert_nothing_written(tmp_path, "a")


def test_calibration_set_for_another_kind(tmp_path, capsys):
    spec = clip_text_spec("clip:ViT-B/32")
    path = write_set(tmp_path / "text.calib", sample(spec, "synthetic", 2, 0, progress=False),
                     {"model": spec.name, "kind": spec.kind, "spec_digest": spec.digest()})
    code, err = run(["--model", "cdinet-s", "--weights", "random", "--calib", str(path), "--out", str(tmp_path / "a"), *FAST], capsys)
    assert code == 2 and "'clip-text' graph" in one_line(err)
    assert_nothing_written(tmp_path, "a")


def test_out_under_a_file(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, err = run(["--model", "cdinet-s", "--weights", "random", "--out", str(blocker / "sub" / "a"), *FAST], capsys)
    assert code == 2 and "is a file" in one_line(err)
    assert blocker.read_text() == "x"


def test_out_is_a_file(tmp_path, capsys):
    target = tmp_path / "a"
    target.write_text("keep me")
    code, err = run(["--model", "cdinet-s", "--weights", "random", "--out", str(target), *FAST], capsys)
    assert code == 2 and "is a file" in one_line(err)
    assert target.read_text() == "keep me"


def test_out_is_a_foreign_folder(tmp_path, capsys):
    target = tmp_path / "home"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    code, err = run(["--model", "cdinet-s", "--weights", "random", "--out", str(target), *FAST], capsys)
    assert code == 2 and "not an edge-mm artifact" in one_line(err)
    assert (target / "notes.txt").read_text() == "mine"


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
    assert sorted(p.name for p in out.iterdir()) == ["report.json"] and (out / "report.json").read_text() == '{"old": true}'


@pytest.mark.parametrize("argv,message", [
    (["--size", "70"], "multiple of 16"),
    (["--max-side", "100"], "multiple of 16"),
])
def test_bad_numbers(tmp_path, capsys, argv, message):
    code, err = run(["--model", "cdinet-s", "--weights", "random", "--out", str(tmp_path / "a"), *argv], capsys)
    assert code == 2 and message in one_line(err)


def test_random_needs_a_known_clip_architecture(tmp_path, capsys):
    code, err = run(["--model", "clip:custom", "--weights", "random", "--out", str(tmp_path / "a")], capsys)
    assert code == 2 and "known architecture" in one_line(err)


def test_weights_required_without_demo(tmp_path, capsys):
    code, err = run(["--model", "cdinet", "--out", str(tmp_path / "a")], capsys)
    assert code == 2 and "--weights is required" in one_line(err)
