"""edge_mm.clip.preprocess against open_clip's (torchvision + PIL) transform, the oracle."""

import json

import numpy as np
import pytest

from edge_mm.clip.preprocess import (
    OPENAI_MEAN,
    OPENAI_STD,
    ClipPreprocess,
    center_crop_offset,
    preprocess_batch,
    preprocess_image,
    resized_size,
)
from edge_mm.errors import ArtifactError, InputError, UsageError

# (height, width): down- and up-scaling, landscape, portrait, > 2x tall (Pillow >= 13 changes the
# pass order there), odd offsets (banker's rounding of the crop), already the right size.
SIZES = [
    (480, 640),
    (720, 1280),
    (640, 480),
    (1000, 333),
    (150, 100),
    (37, 300),
    (229, 224),
    (224, 231),
    (224, 224),
    (90, 90),
]


def make_image(height: int, width: int, seed: int) -> np.ndarray:
    """A BGR uint8 image with smooth gradients, fine stripes (aliasing), shapes and noise."""
    import cv2

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.stack(
        [
            255 * x / max(width - 1, 1),
            127 + 120 * np.sin(x / 1.7 + y / 2.3),  # near-Nyquist stripes: antialiasing matters
            255 * y / max(height - 1, 1),
        ],
        axis=-1,
    )
    image += rng.normal(0, 12, image.shape)
    image = np.clip(image, 0, 255).astype(np.uint8)
    cv2.circle(image, (width // 3, height // 2), max(min(height, width) // 4, 1), (20, 200, 240), -1)
    cv2.rectangle(image, (width // 2, height // 5), (width - 2, height // 2), (250, 30, 60), max(width // 50, 1))
    return image


@pytest.fixture(scope="module")
def oracle():
    torch = pytest.importorskip("torch")
    open_clip = pytest.importorskip("open_clip")
    pil = pytest.importorskip("PIL.Image")
    torch.set_num_threads(2)
    transform = open_clip.image_transform(224, is_train=False)
    return lambda bgr: transform(pil.fromarray(np.ascontiguousarray(bgr[:, :, ::-1]))).numpy()


def _pillow_reorders(height: int, width: int) -> bool:
    """True where Pillow >= 13 runs the vertical pass first (python-pillow/Pillow#9549)."""
    out_h, out_w = resized_size(height, width, 224)
    return out_h < height and out_w < width and (height - out_h) > 2 * (width - out_w)


@pytest.mark.parametrize("height, width", SIZES)
def test_matches_open_clip_transform(oracle, height, width):
    import PIL

    image = make_image(height, width, seed=height * 7 + width)
    ours = preprocess_image(image, ClipPreprocess())
    expected = oracle(image)
    assert ours.shape == expected.shape == (3, 224, 224) and ours.dtype == np.float32
    if _pillow_reorders(height, width) and int(PIL.__version__.split(".")[0]) < 13:
        # Older Pillow ran the horizontal pass first: same filter, another uint8 rounding.
        assert np.abs(ours - expected).max() < 0.2 and np.abs(ours - expected).mean() < 0.01
    else:
        # Pillow's own weights and fixed-point rounding: equal pixel for pixel.
        assert np.abs(ours - expected).max() <= 1e-6


def test_embeddings_match_on_vit_b32(oracle):
    torch = pytest.importorskip("torch")
    import open_clip

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32-quickgelu", pretrained=None).eval()
    images = [make_image(h, w, seed=i) for i, (h, w) in enumerate([(480, 640), (1000, 333), (37, 300)])]
    ours = torch.from_numpy(preprocess_batch(images))
    reference = torch.from_numpy(np.stack([oracle(im) for im in images]))
    with torch.no_grad():
        cos = torch.nn.functional.cosine_similarity(model.encode_image(ours), model.encode_image(reference))
    assert cos.min().item() >= 0.999


def test_resize_and_crop_geometry():
    assert resized_size(480, 640, 224) == (224, 298)
    assert resized_size(640, 480, 224) == (298, 224)
    assert resized_size(1000, 333, 224) == (672, 224)  # int(224 * 1000 / 333) = 672 (truncated)
    assert resized_size(300, 300, 336) == (336, 336)
    assert center_crop_offset(229, 224) == 2  # round(2.5) = 2 (banker's rounding)
    assert center_crop_offset(231, 224) == 4  # round(3.5) = 4
    assert center_crop_offset(298, 224) == 37


def test_grey_alpha_and_colour_order():
    image = make_image(120, 160, seed=1)
    grey = image[:, :, 1].copy()
    out_grey = preprocess_image(grey)
    np.testing.assert_array_equal(preprocess_image(grey[:, :, None]), out_grey)
    np.testing.assert_array_equal(out_grey, preprocess_image(np.repeat(grey[:, :, None], 3, axis=2)))
    bgra = np.concatenate([image, np.full((120, 160, 1), 7, np.uint8)], axis=2)
    np.testing.assert_array_equal(preprocess_image(bgra), preprocess_image(image))
    rgb_spec = ClipPreprocess(color_order="rgb")
    np.testing.assert_array_equal(preprocess_image(image[:, :, ::-1], rgb_spec), preprocess_image(image))
    # Normalisation: a mid-grey image gives (128/255 - mean) / std per channel.
    flat = preprocess_image(np.full((50, 70, 3), 128, np.uint8))
    expected = (np.float32(128 / 255) - np.float32(OPENAI_MEAN)) / np.float32(OPENAI_STD)
    np.testing.assert_allclose(flat[:, 0, 0], expected, atol=1e-6)


def test_other_resolutions():
    spec = ClipPreprocess.for_resolution(336)
    out = preprocess_batch([make_image(400, 500, 0), make_image(100, 90, 1)], spec)
    assert out.shape == (2, 3, 336, 336) and out.dtype == np.float32


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros((10, 10, 3), np.float32), "uint8"),
        (np.zeros((2, 10, 10, 3), np.uint8), "shape"),
        (np.zeros((10, 10, 2), np.uint8), "shape"),
        (np.zeros((0, 10, 3), np.uint8), "empty"),
        ([[1, 2], [3, 4]], "numpy"),
    ],
)
def test_bad_images(bad, match):
    with pytest.raises(InputError, match=match):
        preprocess_image(bad)


def test_bad_batches():
    with pytest.raises(InputError, match="no images"):
        preprocess_batch([])
    with pytest.raises(InputError, match="image 1:"):
        preprocess_batch([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.int16)])


def test_spec_roundtrip_and_validation():
    spec = ClipPreprocess.for_resolution(448)
    data = json.loads(json.dumps(spec.to_dict()))
    assert ClipPreprocess.from_dict(data) == spec
    assert data == {
        "image_size": 448,
        "mean": list(OPENAI_MEAN),
        "std": list(OPENAI_STD),
        "resize": "bicubic",
        "crop": "center",
        "color_order": "bgr",
    }
    with pytest.raises(UsageError, match="image_size"):
        ClipPreprocess(image_size=0)
    with pytest.raises(UsageError, match="resize"):
        ClipPreprocess(resize="bilinear")
    with pytest.raises(UsageError, match="std"):
        ClipPreprocess(std=(1.0, 0.0, 1.0))
    with pytest.raises(ArtifactError, match="unknown keys"):
        ClipPreprocess.from_dict({**data, "depth_range": [0, 1]})
    with pytest.raises(ArtifactError, match="invalid"):
        ClipPreprocess.from_dict({**data, "mean": [0.5, 0.5]})
