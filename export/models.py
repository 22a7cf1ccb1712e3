"""The PyTorch model behind a `--model NAME --weights W` pair, ready to export.

    load_model(parse_model_name("cdinet-s"), None)            # the repository's demo weights
    load_model(parse_model_name("cdinet"), "CDINet.pth")      # the authors' checkpoint
    load_model(parse_model_name("clip:ViT-B/32"), "ViT-B/32") # published weights (downloaded once)
    load_model(parse_model_name("clip:RN50"), "random:3")     # the published architecture, random weights

`--weights` forms: a checkpoint path; a published CLIP name (or `published`) for `clip:NAME`;
`random` / `random:SEED` for any model (the model's own initialisation, seeded; recorded as random
everywhere). Weights that do not fit the named model are a WeightsError, never a silent mismatch.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch
from torch import nn

from edge_mm.clip.preprocess import ClipPreprocess
from edge_mm.errors import UsageError, WeightsError
from edge_mm.hashing import sha256_file
from edge_mm.registry import (
    CLIP_CONTEXT_LENGTH,
    CLIP_DEMO,
    ModelName,
    demo_weights,
    preprocess_from_sidecar,
    read_weights_sidecar,
)
from edge_mm.rgbd import RgbdPreprocess

CLIP_VOCAB_SIZE = 49408

# Constructor arguments of edge_mm.clip.model.CLIP for each published architecture (openai/CLIP's
# build_model on the released checkpoints; open_clip's *-quickgelu configs agree, see the tests).
# vision_layers: a list for the ModifiedResNet stages, an int for a ViT.
CLIP_ARCHITECTURES: Dict[str, Dict[str, Any]] = {
    "RN50": dict(
        embed_dim=1024,
        image_resolution=224,
        vision_layers=[3, 4, 6, 3],
        vision_width=64,
        vision_patch_size=None,
        transformer_width=512,
        transformer_heads=8,
        transformer_layers=12,
    ),
    "RN101": dict(
        embed_dim=512,
        image_resolution=224,
        vision_layers=[3, 4, 23, 3],
        vision_width=64,
        vision_patch_size=None,
        transformer_width=512,
        transformer_heads=8,
        transformer_layers=12,
    ),
    "RN50x4": dict(
        embed_dim=640,
        image_resolution=288,
        vision_layers=[4, 6, 10, 6],
        vision_width=80,
        vision_patch_size=None,
        transformer_width=640,
        transformer_heads=10,
        transformer_layers=12,
    ),
    "RN50x16": dict(
        embed_dim=768,
        image_resolution=384,
        vision_layers=[6, 8, 18, 8],
        vision_width=96,
        vision_patch_size=None,
        transformer_width=768,
        transformer_heads=12,
        transformer_layers=12,
    ),
    "RN50x64": dict(
        embed_dim=1024,
        image_resolution=448,
        vision_layers=[3, 15, 36, 10],
        vision_width=128,
        vision_patch_size=None,
        transformer_width=1024,
        transformer_heads=16,
        transformer_layers=12,
    ),
    "ViT-B/32": dict(
        embed_dim=512,
        image_resolution=224,
        vision_layers=12,
        vision_width=768,
        vision_patch_size=32,
        transformer_width=512,
        transformer_heads=8,
        transformer_layers=12,
    ),
    "ViT-B/16": dict(
        embed_dim=512,
        image_resolution=224,
        vision_layers=12,
        vision_width=768,
        vision_patch_size=16,
        transformer_width=512,
        transformer_heads=8,
        transformer_layers=12,
    ),
    "ViT-L/14": dict(
        embed_dim=768,
        image_resolution=224,
        vision_layers=24,
        vision_width=1024,
        vision_patch_size=14,
        transformer_width=768,
        transformer_heads=12,
        transformer_layers=12,
    ),
    "ViT-L/14@336px": dict(
        embed_dim=768,
        image_resolution=336,
        vision_layers=24,
        vision_width=1024,
        vision_patch_size=14,
        transformer_width=768,
        transformer_heads=12,
        transformer_layers=12,
    ),
}
for _config in CLIP_ARCHITECTURES.values():
    _config.update(context_length=CLIP_CONTEXT_LENGTH, vocab_size=CLIP_VOCAB_SIZE)


@dataclasses.dataclass
class LoadedModel:
    """A model in eval mode on the CPU, with where its weights came from and how inputs are made.

    weights: {"source": "random"|"file"|"published"|"demo", "seed"|"path"|"name": ..., "sha256": ...}.
    preprocess: RgbdPreprocess (CDINet) or ClipPreprocess (CLIP image graph).
    config: the architecture (CDINet width; CLIP constructor arguments).
    """

    name: ModelName
    module: nn.Module
    weights: Dict[str, Any]
    preprocess: Union[RgbdPreprocess, ClipPreprocess]
    config: Dict[str, Any]

    @property
    def family(self) -> str:
        return self.name.family

    @property
    def parameters(self) -> int:
        return sum(p.numel() for p in self.module.parameters())


def parse_random(text: str) -> Optional[int]:
    """The seed of `random` / `random:SEED`, or None if `text` is not a random-weights request."""
    if text == "random":
        return 0
    if text.startswith("random:"):
        seed = text[len("random:") :]
        if not seed.isdigit():
            raise UsageError(f"--weights {text!r}: the seed must be a non-negative integer, as in random:3")
        return int(seed)
    return None


def state_dict_sha256(module: nn.Module) -> str:
    """A digest of the weights themselves (names, shapes, bytes): identifies random weights too."""
    digest = hashlib.sha256()
    for key, tensor in sorted(module.state_dict().items()):
        digest.update(key.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


# ---- CDINet ---------------------------------------------------------------------------------------


def load_cdinet(name: ModelName, weights: Optional[str]) -> LoadedModel:
    from edge_mm.cdinet.model import VARIANTS, build
    from edge_mm.cdinet.weights import from_official

    width = VARIANTS[name.variant]
    preprocess = RgbdPreprocess()
    if weights is None:
        path = demo_weights(name)
        if path is None:
            raise UsageError(
                f"--weights is required for {name.text}: pass the checkpoint (e.g. the authors' CDINet.pth) or random[:SEED]"
            )
        if not path.is_file():
            raise WeightsError(
                f"the demo weights of {name.text} are not in this checkout ({path}); pass --weights PATH or --weights random"
            )
        weights, source = str(path), "demo"
    else:
        source = "file"
    seed = parse_random(weights)
    if seed is not None:
        torch.manual_seed(seed)
        module = build(name.variant).eval()
        info = {"source": "random", "seed": seed, "sha256": state_dict_sha256(module)}
    else:
        path = Path(weights).expanduser()
        module = from_official(path, width=width)  # strict: WeightsError names missing/unexpected keys
        sidecar = read_weights_sidecar(path)
        preprocess = preprocess_from_sidecar(sidecar, path.with_suffix(".json")) or preprocess
        info = {"source": source, "path": str(path), "sha256": sha256_file(path)}
        if sidecar:
            info["sidecar"] = path.with_suffix(".json").name
    return LoadedModel(name, module.eval(), info, preprocess, {"width": width, "channels": list(module.channels)})


# ---- CLIP -----------------------------------------------------------------------------------------


def random_clip(config: Dict[str, Any], seed: int) -> nn.Module:
    """A CLIP of the given architecture with OpenAI's initialisation, seeded."""
    from edge_mm.clip.model import CLIP

    torch.manual_seed(seed)
    return CLIP(**config).float().eval()


def clip_config_of(module: nn.Module) -> Dict[str, Any]:
    from edge_mm.clip.model import clip_config_from_state_dict

    return clip_config_from_state_dict(module.state_dict())


def _check_architecture(name: ModelName, config: Dict[str, Any], where: str) -> None:
    """Published names promise an architecture: weights of another one are refused."""
    expected = CLIP_ARCHITECTURES.get(name.variant)
    if expected is None:
        return
    got = {k: config[k] for k in expected}
    if got != expected:
        diffs = ", ".join(f"{k}={got[k]} (expected {expected[k]})" for k in expected if got[k] != expected[k])
        raise WeightsError(
            f"{where} is not a {name.variant} CLIP: {diffs}; pass --model clip:custom for other architectures"
        )


def load_clip(name: ModelName, weights: Optional[str]) -> LoadedModel:
    from edge_mm.clip.weights import PUBLISHED, load

    if weights is None:
        path = demo_weights(name)
        if path is not None and path.is_file():
            weights, source = str(path), "demo"
        elif path is not None:
            raise WeightsError(
                f"the demo weights of {name.text} are not in this checkout ({path}); pass --weights PATH or --weights random"
            )
        else:
            raise UsageError(
                f"--weights is required for {name.text}: pass a checkpoint path, "
                + (
                    f"the published name ({name.variant}, downloaded once and verified), "
                    if name.variant in PUBLISHED
                    else ""
                )
                + "or random[:SEED]"
            )
    else:
        source = "file"
    if weights == "published":
        if name.variant not in PUBLISHED:
            raise UsageError(f"{name.text} has no published weights; pass a checkpoint path or random[:SEED]")
        weights = name.variant
    seed = parse_random(weights)
    if seed is not None:
        if name.variant not in CLIP_ARCHITECTURES:
            raise UsageError(
                f"random weights need a known architecture and {name.text} has none; use clip:ViT-B/32, clip:RN50, ... "
                "or pass a checkpoint that defines the architecture"
            )
        module = random_clip(CLIP_ARCHITECTURES[name.variant], seed)
        info: Dict[str, Any] = {"source": "random", "seed": seed, "sha256": state_dict_sha256(module)}
    else:
        if weights in PUBLISHED and weights != name.variant and name.variant in CLIP_ARCHITECTURES:
            raise WeightsError(
                f"--weights {weights} are the published {weights} weights, not {name.variant}; pass --weights {name.variant}"
            )
        module, _ = load(weights)  # strict; WeightsError / DownloadError on problems
        source = "published" if weights in PUBLISHED else source
        info = {
            "source": source,
            ("name" if source == "published" else "path"): str(weights),
            "sha256": module.source_sha256,
        }
    config = clip_config_of(module)
    _check_architecture(name, config, f"--weights {weights}")
    if name.variant == CLIP_DEMO and source == "demo":
        info["demo"] = True
    return LoadedModel(
        name, module.float().eval(), info, ClipPreprocess.for_resolution(module.image_resolution), config
    )


def load_model(name: ModelName, weights: Optional[str]) -> LoadedModel:
    """The torch model for `name` with `weights` (None: the repository's demo weights)."""
    if name.family == "cdinet":
        return load_cdinet(name, weights)
    return load_clip(name, weights)
