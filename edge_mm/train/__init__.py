"""Training (torch): `edge-mm-train <model> ...`, one task per model (cdinet.py, clip.py)
on one loop (loop.py; several processes: distributed.py), small shared helpers in common.py.

Nothing is imported here, so `import edge_mm.train` stays cheap; the command line imports torch.
"""
