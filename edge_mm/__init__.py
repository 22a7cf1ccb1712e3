"""edge-mm: CDINet and CLIP from PyTorch to an edge GPU.

Importing this package never imports torch: the model definitions live in submodules
(`edge_mm.clip.model`, `edge_mm.cdinet.model`, ...) that are imported only when used.
"""

__version__ = "0.1.0"
