import json

import pytest

from edge_mm.atomic import atomic_dir, atomic_path
from edge_mm.cli_support import run_cli
from edge_mm.errors import ArtifactError, EdgeMMError, InputError
from edge_mm.spec import ModelSpec, TensorSpec


def test_cli_error_is_one_line_exit_2(capsys):
    def main(argv):
        raise InputError("depth has shape (3, 4); pass an (N,1,H,W) array")

    assert run_cli(main, []) == 2
    err = capsys.readouterr().err
    assert err.strip() == "error: depth has shape (3, 4); pass an (N,1,H,W) array"


def test_cli_debug_keeps_traceback():
    def main(argv):
        raise InputError("boom")

    with pytest.raises(InputError):
        run_cli(main, ["--debug"])


def test_spec_round_trip_and_digest():
    spec = ModelSpec(
        kind="cdinet",
        name="cdinet-s",
        inputs=[TensorSpec("rgb", "float32", ["batch", 3, "height", "width"], "NCHW")],
        outputs=[TensorSpec("saliency", "float32", ["batch", 1, "height", "width"], "NCHW")],
        preprocess={"size": [256, 256]},
    )
    back = ModelSpec.from_json(spec.to_json())
    assert back == spec
    assert back.digest() == spec.digest()
    other = ModelSpec.from_json(spec.to_json())
    other.preprocess = {"size": [224, 224]}
    assert other.digest() != spec.digest()


def test_spec_rejects_bad_json_and_kind():
    with pytest.raises(ArtifactError, match="not valid JSON"):
        ModelSpec.from_json("{nope")
    with pytest.raises(ArtifactError, match="format"):
        ModelSpec.from_json(json.dumps({"format": 99}))
    with pytest.raises(ArtifactError, match="unknown model kind"):
        ModelSpec(kind="yolo", name="x", inputs=[], outputs=[])


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"whole")
    assert target.read_bytes() == b"whole"


def test_atomic_dir_replaces_whole_or_not_at_all(tmp_path):
    final = tmp_path / "artifact"
    with atomic_dir(final) as tmp:
        (tmp / "a.txt").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_dir(final) as tmp:
            (tmp / "a.txt").write_text("2")
            raise RuntimeError("failed export")
    assert (final / "a.txt").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifact"]


def test_every_error_is_an_edge_mm_error():
    import edge_mm.errors as errors

    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, Exception)]
    assert len(classes) > 10
    assert all(issubclass(c, EdgeMMError) for c in classes)
