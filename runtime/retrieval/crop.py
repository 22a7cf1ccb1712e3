"""The salient object's crop that CLIP sees: a padded square around the saliency box (torch-free).

The demo CLIP was trained on exactly this view (edge_mm.train.clip_data.crop_box: a square centred
on the box, its side the box's longer side x (1 + 2 pad), the border replicated where the square
leaves the frame), so the runtime cuts crops the same way; tests/test_clip_stage.py checks the two
agree pixel for pixel. A square keeps all of the object inside CLIP's centre crop.
"""

from __future__ import annotations

from edge_mm.clip.preprocess import DEFAULT_PAD, clamp_box, padded_square_crop

__all__ = ["DEFAULT_PAD", "clamp_box", "padded_square_crop"]
