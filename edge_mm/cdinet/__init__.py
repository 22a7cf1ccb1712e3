"""CDINet (ACM MM 2021) RGB-D salient object detection.

`CDINet`, `from_official`, `build` and the variant table import torch on first use only.
"""

import importlib

_LAZY = {
    "CDINet": "edge_mm.cdinet.model",
    "build": "edge_mm.cdinet.model",
    "VARIANTS": "edge_mm.cdinet.model",
    "from_official": "edge_mm.cdinet.weights",
    "load_vgg16_imagenet": "edge_mm.cdinet.weights",
}


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'edge_mm.cdinet' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = sorted(_LAZY)
