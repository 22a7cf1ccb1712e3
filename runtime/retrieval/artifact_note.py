"""Which CLIP artifact made an index: a small JSON note in the index folder (torch-free).

The store itself records the model's identity (name, spec digest, weights sha256) and refuses
vectors of any other model; this note only records *where* that model's artifact was, so
`edge-mm-index search --index PATH "a red mug"` needs no --model. A moved artifact is found again
with --model, and the note is then rewritten.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Union

from edge_mm.atomic import write_json
from edge_mm.errors import UsageError

ARTIFACT_NOTE = "clip_artifact.json"


def remember_artifact(index_path: Union[str, Path], artifact_root: Union[str, Path], model_info: Any) -> None:
    """Write (atomically) which CLIP artifact made the index; nothing is written when the note is current."""
    note = {
        "format": 1,
        "artifact": str(Path(artifact_root).resolve()),
        "model": {
            "name": model_info.name,
            "spec_digest": model_info.spec_digest,
            "weights_sha256": model_info.weights_sha256,
        },
    }
    path = Path(index_path) / ARTIFACT_NOTE
    try:
        if path.is_file() and json.loads(path.read_text()) == note:
            return
    except (OSError, ValueError):
        pass  # unreadable: rewritten below
    write_json(path, note, indent=1, sort_keys=True)


def remembered_artifact(index_path: Union[str, Path]) -> Optional[Path]:
    """The artifact folder the note names, or None without a readable note."""
    try:
        note = json.loads((Path(index_path) / ARTIFACT_NOTE).read_text())
        return Path(note["artifact"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def artifact_for_index(index_path: Path, given: Optional[str]) -> Path:
    """The CLIP artifact for an index: --model when given, else the one its note remembers."""
    if given:
        return Path(given)
    remembered = remembered_artifact(index_path)
    if remembered is None:
        raise UsageError(f"pass --model CLIP_ARTIFACT (index {index_path} does not say which artifact made it)")
    if not remembered.is_dir():
        raise UsageError(
            f"index {index_path} was made with the CLIP artifact {remembered}, which is no longer there; pass --model with its new folder"
        )
    return remembered


def clip_identity(artifact: Path):
    """(paths, ModelInfo) from the specs alone: checks the index before any model is loaded."""
    from edge_mm.artifact import Artifact
    from runtime.retrieval.embed import clip_model_info, locate_clip_artifact

    paths = locate_clip_artifact(artifact)
    text_spec = Artifact(paths.text).spec if paths.text is not None else None
    return paths, clip_model_info(Artifact(paths.image).spec, text_spec)
