"""What a path holds, read from its layout alone (torch-free, no ONNX parsing).

Every message that suggests a command, and every command that is about to write a folder, asks
this module first: a suggested `build_engine --out X` must never be printed for an X that holds
something else (running it would replace that), and an option given the wrong kind of artifact
says what the path holds and which option takes it.

    kind            layout
    missing         nothing at the path
    empty           an empty folder
    file            a plain file
    clip            image/ and text/ graph folders (a CLIP artifact)
    clip-graph      model.onnx inside image/ or text/ of a CLIP artifact
    saliency        model.onnx (or a precision variant) at the top: a CDINet artifact
    index           vectors.f16 / meta.sqlite: an edge-mm-index retrieval index
    training        last.pth / best.pth: an edge-mm-train run folder
    other           a folder of something else
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional, Union

from edge_mm.errors import ArtifactError

_ONNX_NAMES = ("model.onnx", "model.fp16.onnx", "model.int8.onnx")
_INDEX_FILES = ("vectors.f16", "meta.sqlite")
_TRAINING_FILES = ("last.pth", "best.pth")

# What each kind is called in messages, and which option of which command takes it.
_DESCRIPTION = {
    "clip": "a CLIP artifact (image/ and text/)",
    "clip-graph": "one graph folder of a CLIP artifact",
    "saliency": "a saliency (CDINet) artifact (model.onnx)",
    "index": "an edge-mm-index retrieval index",
    "training": "an edge-mm-train run folder (last.pth)",
    "file": "a file",
    "other": "a folder that is not an edge-mm artifact",
    "empty": "an empty folder",
    "missing": "nothing",
}
_WANTED = {"clip": "a CLIP artifact", "saliency": "a saliency (CDINet) artifact"}
_TAKEN_BY = {
    "clip": "CLIP goes to --clip (edge-mm-run) or --model (edge-mm-index)",
    "clip-graph": "pass the CLIP artifact folder above it to --clip (edge-mm-run) or --model (edge-mm-index)",
    "saliency": "a saliency artifact goes to --model (edge-mm-run) or --saliency (edge-mm-index)",
    "index": "an index goes to edge-mm-index --index",
}


@dataclasses.dataclass(frozen=True)
class PathKind:
    path: Path
    kind: str

    def describe(self) -> str:
        return _DESCRIPTION[self.kind]

    @property
    def is_artifact(self) -> bool:
        return self.kind in ("clip", "clip-graph", "saliency")


def path_kind(path: Union[str, Path]) -> PathKind:
    """Classify `path` by what is inside it (never raises for an unreadable folder: 'other')."""
    path = Path(path)
    try:
        if not path.exists():
            return PathKind(path, "missing")
        if not path.is_dir():
            return PathKind(path, "file")
        if (path / "image").is_dir() and (path / "text").is_dir():
            return PathKind(path, "clip")
        if any((path / name).is_file() for name in _ONNX_NAMES):
            parent = path.parent
            if path.name in ("image", "text") and (parent / "image").is_dir() and (parent / "text").is_dir():
                return PathKind(path, "clip-graph")
            return PathKind(path, "saliency")
        if any((path / name).exists() for name in _INDEX_FILES):
            return PathKind(path, "index")
        if any((path / name).exists() for name in _TRAINING_FILES):
            return PathKind(path, "training")
        return PathKind(path, "other" if any(path.iterdir()) else "empty")
    except OSError:
        return PathKind(path, "other")


def artifact_family(model_name: str) -> str:
    """'clip' for clip names (clip-demo, clip:ViT-B/32), 'saliency' for CDINet ones."""
    return "clip" if model_name.lower().startswith("clip") else "saliency"


def build_command(out: Union[str, Path], model: Optional[str] = None) -> str:
    """The one export command every message suggests for `out` (the single rebuild-command function).

    A graph folder of a CLIP artifact (image/, text/) is rebuilt through its artifact folder, never
    on its own (that would put a one-graph artifact inside the CLIP one). build_engine itself refuses
    an --out of another model family without --force, so a command printed for the wrong path
    fails safely instead of replacing what is there.
    """
    from edge_mm.artifact.commands import export_command  # the contract's one export command (issue 11)

    out = Path(out)
    if path_kind(out).kind == "clip-graph":
        out = out.parent
    return export_command(out, model)


def wrong_kind_error(path: Union[str, Path], option: str, wanted: str) -> ArtifactError:
    """'X is a CLIP artifact (image/ and text/); --model takes a saliency artifact; CLIP goes to --clip'."""
    found = path_kind(path)
    taken = _TAKEN_BY.get(found.kind)
    if found.kind == "file" and found.path.suffix == ".onnx":
        taken = "give the artifact folder that holds it"
    message = f"{found.path} is {found.describe()}; {option} takes {_WANTED[wanted]}"
    return ArtifactError(message + (f"; {taken}" if taken else ""))


def require_artifact(path: Union[str, Path], option: str, wanted: str, model: str) -> PathKind:
    """Check that `path` holds a `wanted` ('clip' or 'saliency') artifact before it is opened.

    A missing path or an empty folder suggests the build command (safe: nothing is there to lose);
    anything else is a kind mismatch that says what the path holds and never suggests writing over it.
    """
    found = path_kind(path)
    if found.kind == wanted or (wanted == "clip" and found.kind == "clip-graph"):
        return found
    if found.kind in ("missing", "empty"):
        where = "no" if found.kind == "missing" else "an empty folder, no"
        raise ArtifactError(
            f"{option} {found.path}: {where} {'CLIP' if wanted == 'clip' else 'saliency'} artifact there; "
            f"build it with `{build_command(found.path, model)}`"
        )
    raise wrong_kind_error(path, option, wanted)


def check_build_target(out: Union[str, Path], model_name: str, force: bool = False) -> None:
    """`build_engine --out` may replace an artifact of the same model family only (or anything with --force)."""
    found = path_kind(out)
    wanted = artifact_family(model_name)
    # Files and unknown folders are export.pipeline.check_out_dir's to judge (an old report.json alone is ours).
    if force or found.kind in ("missing", "empty", "file", "other", wanted):
        return
    if found.kind == "clip-graph" and wanted == "clip":
        raise ArtifactError(
            f"--out {found.path} is {found.describe()}; give the artifact folder above it, or a new folder"
        )
    raise ArtifactError(
        f"--out {found.path} is {found.describe()}, not a {'CLIP' if wanted == 'clip' else 'saliency'} artifact; "
        "choose a new folder (or add --force to replace it)"
    )
