"""CLIP: the OpenAI architecture, its weights, tokenizer, preprocessing and zero-shot classifier.

`tokenize` and the preprocessing are torch-free; `load`, `available_models` and `CLIP` import torch
on first use only, so `import edge_mm.clip.tokenizer` never loads torch.
"""

import importlib

_LAZY = {
    "tokenize": "edge_mm.clip.tokenizer",
    "ClipPreprocess": "edge_mm.clip.preprocess",
    "preprocess_image": "edge_mm.clip.preprocess",
    "preprocess_batch": "edge_mm.clip.preprocess",
    "build_classifier": "edge_mm.clip.zero_shot",
    "ZeroShotClassifier": "edge_mm.clip.zero_shot",
    "load": "edge_mm.clip.weights",
    "available_models": "edge_mm.clip.weights",
    "CLIP": "edge_mm.clip.model",
    "build_model": "edge_mm.clip.model",
}


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'edge_mm.clip' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = sorted(_LAZY)
