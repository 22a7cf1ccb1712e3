"""CDINet weights as edge-mm reads them, and the model a training run starts from.

`load_cdinet(weights, variant)` resolves every kind of CDINet weights to a model in eval mode and
the preprocessing spec it was trained with:
    None / cdinet-s         the demo weights shipped in edge_mm/weights (their JSON gives the spec)
    PATH                    an edge-mm training checkpoint (best.pth / last.pth: variant and spec are
                            read from it), or any state dict of the official CDINet keys
                            (--variant gives its width, default cdinet)
    random                  an untrained model, initialised as training starts (seed)
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Dict, Optional

import torch
from torch import nn

from edge_mm.checkpoint import checkpoint_meta, is_training_checkpoint, read_checkpoint_file
from edge_mm.errors import UsageError, WeightsError
from edge_mm.registry import DEMO_WEIGHTS
from edge_mm.rgbd import RgbdPreprocess


def he_initialise(model: nn.Module) -> nn.Module:
    """Kaiming-normal (fan_out, ReLU) convolutions with zero biases, as torchvision initialises VGG."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model


def initial_model(variant: str, seed: int, vgg16: Optional[str] = None) -> nn.Module:
    """The model a run starts from: He init seeded by `seed`, then ImageNet VGG16 streams if a file is given.

    PyTorch's default init shrinks the signal through the 13-conv VGG streams, which have no
    normalisation layers; He init keeps it (torchvision's VGG init).
    """
    from edge_mm.cdinet.model import build
    from edge_mm.cdinet.weights import load_vgg16_imagenet

    torch.manual_seed(seed)
    model = he_initialise(build(variant))
    if vgg16:
        load_vgg16_imagenet(model, vgg16)
    return model


@dataclasses.dataclass
class LoadedCdinet:
    """A CDINet in eval mode with the preprocessing its weights were trained with."""

    model: torch.nn.Module
    spec: RgbdPreprocess
    variant: str
    kind: str  # "demo", "checkpoint", "state-dict" (official format) or "random"
    weights: Optional[str]

    def describe(self) -> Dict[str, Any]:
        return {"variant": self.variant, "weights_kind": self.kind, "weights": self.weights}


def variant_width(variant: str) -> float:
    from edge_mm.cdinet.model import VARIANTS

    if variant not in VARIANTS:
        raise UsageError(f"unknown CDINet variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    return VARIANTS[variant]


def _sidecar_spec(weights_path: Path) -> Optional[RgbdPreprocess]:
    """The spec recorded in `<weights>.json` beside a plain state dict (the demo weights have one)."""
    sidecar = weights_path.with_suffix(".json")
    if not sidecar.is_file():
        return None
    try:
        data = json.loads(sidecar.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise WeightsError(
            f"cannot read {sidecar} ({exc}); restore it or delete it to use the default preprocessing"
        ) from None
    if not isinstance(data, dict) or "preprocess" not in data:
        return None
    return RgbdPreprocess.from_dict(data["preprocess"])


def load_cdinet(weights: Optional[str], variant: Optional[str] = None, seed: int = 0) -> LoadedCdinet:
    """Resolve --weights / --variant to a model and its preprocessing spec (see the module doc)."""
    from edge_mm.cdinet.weights import from_official

    if weights is None or (weights in DEMO_WEIGHTS and not Path(weights).exists()):
        name = weights or variant or "cdinet-s"
        if variant is not None and variant != name:
            raise UsageError(f"--variant {variant} does not match the demo weights {name}; drop one of them")
        path = DEMO_WEIGHTS.get(name)
        if path is None or not name.startswith("cdinet"):
            raise UsageError(f"no demo weights for {name!r}; pass --weights PATH (demo CDINet weights: cdinet-s)")
        if not path.is_file():
            raise WeightsError(f"the demo weights {path} are missing; reinstall edge-mm or pass --weights PATH")
        model = from_official(str(path), width=variant_width(name))
        return LoadedCdinet(model, _sidecar_spec(path) or RgbdPreprocess(), name, "demo", str(path))

    if weights == "random":
        name = variant or "cdinet-s"
        variant_width(name)
        model = initial_model(name, seed=seed).eval()
        return LoadedCdinet(model, RgbdPreprocess(), name, "random", None)

    path = Path(weights)
    data = read_checkpoint_file(path)
    if is_training_checkpoint(data):
        meta = checkpoint_meta(data, str(path))
        trained_variant = meta.get("variant")
        if variant is not None and variant != trained_variant:
            raise UsageError(f"{path} was trained as {trained_variant}, not --variant {variant}; drop --variant")
        model = from_official(data["model"], width=variant_width(str(trained_variant)))
        try:
            spec = RgbdPreprocess.from_dict(meta["preprocess"])
        except KeyError:
            raise WeightsError(f"{path} records no preprocessing spec; it is damaged, use another checkpoint") from None
        return LoadedCdinet(model, spec, str(trained_variant), "checkpoint", str(path))

    name = variant or "cdinet"
    try:
        model = from_official(data, width=variant_width(name))
    except WeightsError as exc:
        # the message names the file rather than "the given state dict"
        raise WeightsError(str(exc).replace("the given state dict", str(path), 1)) from None
    return LoadedCdinet(model, _sidecar_spec(path) or RgbdPreprocess(), name, "state-dict", str(path))
