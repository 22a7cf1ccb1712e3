"""Weight loading for CDINet: the authors' released checkpoint and torchvision's ImageNet VGG16.

Everything loads strictly. The authors' own test script loads with strict=False, which turns a
renamed key or a DataParallel `module.` prefix into a silently random network; here any
mismatch is a WeightsError that names the keys and shapes involved.
Files are read with torch.load(weights_only=True): a checkpoint is never unpickled as code.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Dict, Iterable, Tuple, Union

import torch
from torch import Tensor

from edge_mm.cdinet.model import CONVS_PER_STAGE, OFFICIAL_CHANNELS, CDINet
from edge_mm.checkpoint_file import check_checkpoint_path, unreadable_checkpoint
from edge_mm.errors import WeightsError

StateDict = Dict[str, Tensor]
Source = Union[str, "os.PathLike[str]", Mapping]

_WRAPPER_KEYS = ("state_dict", "model")  # common checkpoint wrappers: {"state_dict": {...}}, {"model": {...}}
_PREFIX = "module."  # added by nn.DataParallel / DistributedDataParallel
_SHOW = 5  # how many key names an error message lists


def read_state_dict(source: Source) -> Tuple[StateDict, str]:
    """A flat {name: tensor} dict from a .pth path or a dict, unwrapped; also a label for messages."""
    if isinstance(source, Mapping):
        data, label = source, "the given state dict"
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        label = str(path)
        check_checkpoint_path(path)
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # corrupt zip, truncated file, pickled objects refused by weights_only, ...
            raise unreadable_checkpoint(path, exc) from None
    else:
        raise WeightsError(f"expected a checkpoint path or a state dict, got {type(source).__name__}")

    for _ in range(3):  # {"model": {"state_dict": {...}}} and the like
        if not isinstance(data, Mapping):
            break
        inner = next((data[k] for k in _WRAPPER_KEYS if isinstance(data.get(k), Mapping)), None)
        if inner is None or any(isinstance(v, Tensor) for v in data.values()):
            break
        data = inner
    if not isinstance(data, Mapping):
        raise WeightsError(f"{label} holds a {type(data).__name__}, not a state dict of named tensors")

    names = [str(k) for k in data]
    if names and all(n.startswith(_PREFIX) for n in names):
        data = {str(k)[len(_PREFIX) :]: v for k, v in data.items()}
    not_tensors = [str(k) for k, v in data.items() if not isinstance(v, Tensor)]
    if not_tensors:
        raise WeightsError(
            f"{label} is not a state dict: {_first(not_tensors)} are not tensors; pass the model's state_dict()"
        )
    return {str(k): v for k, v in data.items()}, label


def _compare(expected: Mapping, state: Mapping) -> str:
    """'' if `state` has exactly the keys and shapes of `expected`, else a description of the first problem."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s): {_first(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): {_first(unexpected)}")
        return "; ".join(parts)
    mismatched = [k for k, v in expected.items() if tuple(state[k].shape) != tuple(v.shape)]
    if mismatched:
        shown = ", ".join(
            f"{k} is {tuple(state[k].shape)} in the file but {tuple(expected[k].shape)} in the model"
            for k in mismatched[:3]
        )
        more = f" (+{len(mismatched) - 3} more)" if len(mismatched) > 3 else ""
        return f"{len(mismatched)} shape mismatch(es): {shown}{more}"
    return ""


def load_strict(module: torch.nn.Module, state: StateDict, label: str, what: str) -> None:
    """module.load_state_dict(state, strict=True), with one-line errors naming keys and shapes."""
    problem = _compare(module.state_dict(), state)
    if problem:
        raise WeightsError(f"{label} does not match {what}: {problem}")
    module.load_state_dict(state, strict=True)


def from_official(state_dict_or_path: Source, width: float = 1.0) -> CDINet:
    """A CDINet in eval mode with the authors' checkpoint (CDINet.pth) or any state dict with its keys.

    Accepts a path or a dict; `state_dict` / `model` wrappers and a `module.` prefix are removed.
    `width` must be the width the weights were trained at (1.0 for the released checkpoint).
    """
    state, label = read_state_dict(state_dict_or_path)
    model = CDINet(width=width)
    load_strict(model, state, label, f"CDINet (width {width:g})")
    return model.eval()


def vgg16_key_map(stream: str) -> Dict[str, str]:
    """torchvision `features.{i}.{weight,bias}` -> CDINet `{stream}.conv{k}.conv{k}_{j}.{...}`.

    torchvision's VGG16 `features` is [conv, ReLU] * n per stage followed by a MaxPool, so the
    index advances by 2 per conv and by 1 more per pool; CDINet keeps the convs and drops pool5.
    """
    mapping: Dict[str, str] = {}
    index = 0
    for level, n_convs in enumerate(CONVS_PER_STAGE, start=1):
        for j in range(1, n_convs + 1):
            for param in ("weight", "bias"):
                mapping[f"features.{index}.{param}"] = f"{stream}.conv{level}.conv{level}_{j}.{param}"
            index += 2  # conv, ReLU
        index += 1  # MaxPool
    return mapping


def load_vgg16_imagenet(model: CDINet, path: Union[str, "os.PathLike[str]"]) -> CDINet:
    """Copy torchvision's ImageNet VGG16 conv weights into both streams, as the authors start training.

    `path` is a local torchvision `vgg16-*.pth` (keys `features.N.*`, `classifier.N.*`; the
    classifier is ignored). The depth stream takes the same 3-channel first conv because the
    model replicates depth to three channels. Only width 1.0 has VGG16's shapes.
    """
    if tuple(model.channels) != OFFICIAL_CHANNELS:
        raise WeightsError(
            f"ImageNet VGG16 weights fit only the full-width CDINet (channels {OFFICIAL_CHANNELS}), "
            f"not width {model.width:g}; build the model with width 1.0 or train the small variant from scratch"
        )
    state, label = read_state_dict(path)
    features = {k: v for k, v in state.items() if k.startswith("features.")}
    others = [k for k in state if not k.startswith(("features.", "classifier."))]
    if others:
        raise WeightsError(f"{label} is not a torchvision VGG16 state dict: unexpected key(s) {_first(others)}")
    # check the file against VGG16 in torchvision's own names, so errors name what the user has
    own = model.state_dict()
    expected = {src: own[dst] for src, dst in vgg16_key_map("vgg_r").items()}
    problem = _compare(expected, features)
    if problem:
        is_bn = any(k.endswith("running_mean") for k in features)
        hint = "; vgg16_bn's BatchNorm layers shift the indices: use the plain vgg16 weights" if is_bn else ""
        raise WeightsError(f"{label} is not a torchvision VGG16 state dict: {problem}{hint}")
    for stream in ("vgg_r", "vgg_d"):
        stream_state = {dst[len(stream) + 1 :]: features[src] for src, dst in vgg16_key_map(stream).items()}
        getattr(model, stream).load_state_dict(stream_state, strict=True)
    return model


def _first(names: Iterable[str]) -> str:
    names = list(names)
    shown = ", ".join(names[:_SHOW])
    return shown + (f", ... ({len(names)} in all)" if len(names) > _SHOW else "")
