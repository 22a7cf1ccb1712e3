"""CLIP weights: the published OpenAI checkpoints and local files, loaded strictly.

Readers, in the order they are tried for a file:
- an OpenAI TorchScript archive (a zip holding `constants.pkl` or `code/`): `torch.jit.load`, then
  `.state_dict()` (`torch.load(weights_only=True)` refuses these archives);
- `.safetensors`: `safetensors.torch.load_file`;
- anything else: `torch.load(weights_only=True)`, a plain state dict or an open_clip training
  checkpoint (`{"state_dict": ...}`, `module.` prefixes). Nothing is unpickled beyond that.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import torch

from edge_mm.checkpoint_file import check_checkpoint_path, unreadable_checkpoint
from edge_mm.clip.model import CLIP, build_model
from edge_mm.clip.preprocess import ClipPreprocess
from edge_mm.download import cache_dir as download_cache_dir
from edge_mm.download import download_verified
from edge_mm.errors import WeightsError
from edge_mm.hashing import sha256_file

URL_BASE_ENV = "EDGE_MM_CLIP_URL_BASE"
DEFAULT_URL_BASE = "https://openaipublic.azureedge.net/clip/models"


@dataclass(frozen=True)
class PublishedWeights:
    filename: str
    sha256: str  # also the second-to-last element of the URL


# openai/CLIP `_MODELS`: <base>/<sha256>/<filename>.
PUBLISHED: Dict[str, PublishedWeights] = {
    "RN50": PublishedWeights("RN50.pt", "afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762"),
    "RN101": PublishedWeights("RN101.pt", "8fa8567bab74a42d41c5915025a8e4538c3bdbe8804a470a72f30b0d94fab599"),
    "RN50x4": PublishedWeights("RN50x4.pt", "7e526bd135e493cef0776de27d5f42653e6b4c8bf9e0f653bb11773263205fdd"),
    "RN50x16": PublishedWeights("RN50x16.pt", "52378b407f34354e150460fe41077663dd5b39c54cd0bfd2b27167a4a06ec9aa"),
    "RN50x64": PublishedWeights("RN50x64.pt", "be1cfb55d75a9666199fb2206c106743da0f6468c9d327f3e0d0a543a9919d9c"),
    "ViT-B/32": PublishedWeights("ViT-B-32.pt", "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af"),
    "ViT-B/16": PublishedWeights("ViT-B-16.pt", "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f"),
    "ViT-L/14": PublishedWeights("ViT-L-14.pt", "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836"),
    "ViT-L/14@336px": PublishedWeights(
        "ViT-L-14-336px.pt", "3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02"
    ),
}


def available_models() -> List[str]:
    """Names of the published OpenAI CLIP checkpoints that `load` can download."""
    return list(PUBLISHED)


def published_url(name: str) -> str:
    """Download URL of a published checkpoint; the base is $EDGE_MM_CLIP_URL_BASE if set."""
    entry = PUBLISHED[name]
    base = os.environ.get(URL_BASE_ENV) or DEFAULT_URL_BASE
    return f"{base.rstrip('/')}/{entry.sha256}/{entry.filename}"


def download_published(name: str, cache_dir: Optional[Union[str, Path]] = None) -> Path:
    """Fetch (or find in the cache) a published checkpoint, verified against its SHA-256."""
    entry = PUBLISHED[name]
    dest = Path(cache_dir) if cache_dir is not None else download_cache_dir() / "clip"
    return download_verified(published_url(name), entry.sha256, dest_dir=dest, filename=entry.filename)


# --------------------------------------------------------------------------------------------------
# Reading checkpoint files


def _is_torchscript_archive(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    # torch.save zips hold <root>/data.pkl; TorchScript adds <root>/constants.pkl and <root>/code/.
    return any(n.endswith("/constants.pkl") or "/code/" in n for n in names)


def _corrupt(path: Path, exc: BaseException) -> WeightsError:
    return unreadable_checkpoint(path, exc, "CLIP weights")


def _unwrap(checkpoint: Any, path: Path) -> Dict[str, torch.Tensor]:
    """The tensor dict inside a checkpoint: unwrap `{"state_dict": ...}`, strip DDP `module.` prefixes."""
    if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get("state_dict"), Mapping):
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, Mapping) or not checkpoint:
        raise WeightsError(
            f"{path} holds a {type(checkpoint).__name__}, not a state dict: "
            "save one with torch.save(model.state_dict(), path)"
        )
    not_tensors = [str(k) for k, v in checkpoint.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise WeightsError(
            f"{path} is not a state dict: entries {', '.join(not_tensors[:5])} are not tensors; "
            "pass the model's state_dict (or an open_clip checkpoint with a 'state_dict' entry)"
        )
    if all(k.startswith("module.") for k in checkpoint):
        checkpoint = {k[len("module.") :]: v for k, v in checkpoint.items()}
    return dict(checkpoint)


def _drop_traced_attn_mask(state_dict: Dict[str, torch.Tensor], path: Path) -> Dict[str, torch.Tensor]:
    """Drop the causal mask that a traced open_clip model leaves in its state dict.

    open_clip keeps `attn_mask` as a non-persistent buffer; TorchScript forgets that flag, so traced
    archives list it as a weight. It is dropped only if it is exactly the causal mask we rebuild.
    """
    mask = state_dict.get("attn_mask")
    if mask is None:
        return state_dict
    n = mask.shape[0] if mask.ndim == 2 else -1
    causal = torch.full((max(n, 0), max(n, 0)), float("-inf")).triu_(1)
    if mask.shape != causal.shape or not torch.equal(mask.float(), causal):
        raise WeightsError(
            f"{path} has an 'attn_mask' entry of shape {list(mask.shape)} that is not CLIP's causal mask: "
            "the archive is not an OpenAI/open_clip CLIP"
        )
    del state_dict["attn_mask"]
    return state_dict


def read_state_dict(path: Union[str, Path]) -> Dict[str, torch.Tensor]:
    """The CLIP state dict stored in `path` (TorchScript archive, safetensors, or torch.save file)."""
    path = Path(path)
    check_checkpoint_path(path, "CLIP weights file")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise WeightsError(f"reading {path} needs the safetensors package: pip install safetensors") from None
    try:
        if _is_torchscript_archive(path):
            # OpenAI's published .pt files are TorchScript archives.
            scripted = torch.jit.load(str(path), map_location="cpu")
            return _drop_traced_attn_mask(_unwrap(scripted.state_dict(), path), path)
        if path.suffix == ".safetensors":
            checkpoint = load_file(str(path), device="cpu")
        else:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except WeightsError:
        raise
    except Exception as exc:  # torch and safetensors raise assorted types for a damaged file
        raise _corrupt(path, exc) from None
    return _unwrap(checkpoint, path)


# --------------------------------------------------------------------------------------------------
# Loading


def resolve_weights(
    name_or_path: Union[str, Path], cache_dir: Optional[Union[str, Path]] = None
) -> Tuple[Path, Optional[str]]:
    """(weights file, its SHA-256 if already verified) for a published model name or a local path."""
    if isinstance(name_or_path, str) and name_or_path in PUBLISHED:
        return download_published(name_or_path, cache_dir), PUBLISHED[name_or_path].sha256
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path, None
    if path.is_dir():
        check_checkpoint_path(path, "CLIP weights")  # says it is a folder
    raise WeightsError(
        f"{name_or_path!s} is neither a published CLIP model nor an existing file: "
        f"pass one of {', '.join(PUBLISHED)} or a path to a .pt/.pth/.bin/.safetensors checkpoint"
    )


def load(
    name_or_path: Union[str, Path],
    device: Union[str, torch.device] = "cpu",
    cache_dir: Optional[Union[str, Path]] = None,
) -> Tuple[CLIP, ClipPreprocess]:
    """Load CLIP weights strictly; return (fp32 model in eval mode on `device`, its preprocessing).

    `name_or_path` is a published name (see `available_models()`, downloaded once and verified) or a
    checkpoint file. The model carries `source_sha256` (of the weights file) and `source_path`.
    """
    path, sha256 = resolve_weights(name_or_path, cache_dir)
    try:
        model = build_model(read_state_dict(path))
    except WeightsError as exc:
        message = str(exc)
        raise WeightsError(message if str(path) in message else f"{path}: {message}") from None
    model = model.to(device)
    model.source_path = str(path)
    model.source_sha256 = sha256 or sha256_file(path)
    return model, ClipPreprocess.for_resolution(model.image_resolution)


def save_plain_weights(model: CLIP, path: Union[str, Path]) -> Path:
    """The model's OpenAI-named state dict alone (fp32), as `load` reads it; written atomically."""
    from edge_mm.atomic import atomic_path

    state = {k: v.detach().to("cpu", torch.float32).clone().contiguous() for k, v in model.state_dict().items()}
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def initial_model(config: str, init: Optional[str], seed: int) -> CLIP:
    """The CLIP a training run starts from: `init` (a published name or a state-dict file, loaded
    strictly) or, without it, SCRATCH_CONFIGS[config] initialised from `seed`."""
    from edge_mm.clip.model import CONTEXT_LENGTH, build_scratch_model

    if init is None:
        return build_scratch_model(config, seed)
    model, _ = load(init)
    if model.context_length != CONTEXT_LENGTH:
        raise WeightsError(f"--init {init} has context length {model.context_length}; edge-mm needs {CONTEXT_LENGTH}")
    return model
