"""Training (torch): `edge-mm-train <model> ...`, one module per model (cdinet.py), shared helpers in common.py.

Nothing is imported here, so `import edge_mm.train` stays cheap; the command line imports torch.
"""
