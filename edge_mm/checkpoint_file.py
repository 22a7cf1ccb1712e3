"""Why a checkpoint file cannot be loaded, in our words (torch-free).

torch.load's own errors are long, cut badly when shortened, and some advise re-running with
weights_only=False, which would execute whatever code a pickle carries. Every weights loader
(CDINet, CLIP, training checkpoints) instead asks here: the file's bytes say what it is, and the
message says what to do, without quoting torch.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Union

from edge_mm.errors import WeightsError

_PICKLE_PROTOCOL = 0x80  # the first byte of a pickle of protocol 2 or later (legacy torch.save too)
_RESAVE = "re-save only its tensors with torch.save(model.state_dict(), path) where you trust the file"


def check_checkpoint_path(path: Union[str, Path], what: str = "checkpoint") -> Path:
    """A readable file at `path`, else a WeightsError that says what is there instead."""
    path = Path(path)
    if path.is_dir():
        raise WeightsError(f"{what} {path} is a folder; pass the checkpoint file inside it (a .pth or .pt file)")
    if not path.is_file():
        raise WeightsError(f"{what} {path} does not exist; check the path (a .pth or .pt file)")
    return path


def _refused_by_weights_only(exc: BaseException) -> bool:
    return "weights only load failed" in str(exc).lower() or "unsupported global" in str(exc).lower()


def describe_unreadable(path: Union[str, Path], exc: BaseException) -> str:
    """What the file at `path` is and what to do, given the exception torch.load raised for it."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError as err:
        return f"{path} cannot be read ({err.strerror}); check its permissions"
    if size == 0:
        return f"{path} is empty (an interrupted copy or save); copy or download it again"
    if path.suffix == ".safetensors":
        return f"{path} is not a readable safetensors file (damaged or truncated); copy or download it again"
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(path) as archive:
                if archive.testzip() is not None:
                    raise zipfile.BadZipFile
        except (zipfile.BadZipFile, EOFError, OSError):
            return f"{path} is truncated or damaged (its zip archive is incomplete); copy or download it again"
        if _refused_by_weights_only(exc):
            return f"{path} is a pickle that would run code when loaded (it stores Python objects, not only tensors); {_RESAVE}"
        return f"{path} is a zip archive but not a PyTorch checkpoint edge-mm can read; pass a file made by torch.save"
    if head and head[0] == _PICKLE_PROTOCOL:
        if _refused_by_weights_only(exc):
            return f"{path} is a pickle that would run code when loaded (it stores Python objects); {_RESAVE}"
        return f"{path} is a pickle that is truncated or not a checkpoint; copy it again or {_RESAVE}"
    return f"{path} is not a checkpoint (neither a torch.save archive nor a pickle); pass a .pth or .pt file made by torch.save"


def unreadable_checkpoint(path: Union[str, Path], exc: BaseException, what: str = "checkpoint") -> WeightsError:
    return WeightsError(f"cannot load {what}: {describe_unreadable(path, exc)}")
