"""Evaluation: `edge-mm-eval <model> ...` and the metrics shared with training and export.

`edge_mm.evaluate.metrics` and `edge_mm.evaluate.samples` are torch-free; `cdinet` imports torch.
"""
