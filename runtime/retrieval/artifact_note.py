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
