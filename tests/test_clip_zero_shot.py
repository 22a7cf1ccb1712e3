"""edge_mm.clip.zero_shot against open_clip's zero-shot classifier on a small random-weight CLIP."""

import numpy as np
import pytest

from edge_mm.clip.tokenizer import tokenize
from edge_mm.clip.zero_shot import DEFAULT_TEMPLATES, ZeroShotClassifier, build_classifier
from edge_mm.errors import ArtifactError, InputError

CLASSES = ["dog", "cat", "red car", "aeroplane", "tabby cat on a sofa", "東京タワー"]


@pytest.fixture(scope="module")
def tiny_clip():
    torch = pytest.importorskip("torch")
    open_clip_model = pytest.importorskip("open_clip.model")
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = open_clip_model.CLIP(
        embed_dim=32,
        vision_cfg=open_clip_model.CLIPVisionCfg(layers=2, width=64, head_width=32, patch_size=16, image_size=64),
        text_cfg=open_clip_model.CLIPTextCfg(context_length=77, vocab_size=49408, width=64, heads=2, layers=2),
        quick_gelu=True,
    ).eval()
    return model


def numpy_encoder(model):
    import torch

    def encode_text(ids: np.ndarray) -> np.ndarray:
        assert ids.dtype == np.int64 and ids.shape[1] == 77
        with torch.no_grad():
            return model.encode_text(torch.from_numpy(ids)).numpy()

    return encode_text


def test_matches_open_clip_classifier_and_torch_scores(tiny_clip):
    import open_clip
    import torch
    from open_clip.zero_shot_classifier import build_zero_shot_classifier

    clf = build_classifier(numpy_encoder(tiny_clip), CLASSES, batch_size=5)
    reference = build_zero_shot_classifier(tiny_clip, open_clip.get_tokenizer("ViT-B-32"), CLASSES, DEFAULT_TEMPLATES)
    assert clf.weights.shape == (len(CLASSES), 32)
    np.testing.assert_allclose(clf.weights, reference.T.numpy(), atol=2e-6)
    np.testing.assert_allclose(np.linalg.norm(clf.weights, axis=1), 1.0, atol=1e-6)

    torch.manual_seed(1)
    images = torch.randn(5, 3, 64, 64)
    with torch.no_grad():
        image_embeds = tiny_clip.encode_image(images)
        probs = (100.0 * torch.nn.functional.normalize(image_embeds, dim=-1) @ reference).softmax(dim=-1)
    expected_p, expected_i = probs.topk(3, dim=-1)
    indices, p = clf.classify(image_embeds.numpy(), top_k=3)
    assert indices.shape == (5, 3) and indices.dtype == np.int64 and p.dtype == np.float32
    np.testing.assert_array_equal(indices, expected_i.numpy())
    np.testing.assert_allclose(p, expected_p.numpy(), atol=1e-5)
    np.testing.assert_allclose(clf.probabilities(image_embeds.numpy()).sum(axis=1), 1.0, atol=1e-5)


def test_batching_does_not_change_weights(tiny_clip):
    encode = numpy_encoder(tiny_clip)
    one = build_classifier(encode, CLASSES, batch_size=4)
    all_at_once = build_classifier(encode, CLASSES, batch_size=1000)
    np.testing.assert_allclose(one.weights, all_at_once.weights, atol=1e-6)


def test_image_equal_to_class_text_embedding_is_that_class(tiny_clip):
    encode = numpy_encoder(tiny_clip)
    clf = build_classifier(encode, CLASSES, templates=["a photo of a {}."])
    for k, name in enumerate(CLASSES):
        embed = encode(tokenize(f"a photo of a {name}."))[0] * 3.7  # scale must not matter
        index, prob = clf.classify(embed, top_k=2)
        assert index[0] == k and clf.labels(index)[0] == name
        assert prob[0] > prob[1]


def test_bare_class_names_template():
    seen = []

    def encode_text(ids):
        seen.append(ids.copy())
        rng = np.random.default_rng(int(ids.sum()) % 1000)
        return rng.normal(size=(len(ids), 8))

    clf = build_classifier(encode_text, ["dog", "cat"], templates=["{}"])
    np.testing.assert_array_equal(np.concatenate(seen), tokenize(["dog", "cat"]))
    assert clf.templates == ("{}",) and clf.embed_dim == 8


def test_known_answer_with_formula_encoder():
    # Text embeddings are one-hot on a hash of the prompt, so every class is orthogonal to the others.
    def encode_text(ids):
        out = np.zeros((len(ids), 16))
        out[np.arange(len(ids)), ids[:, 1] % 16] = 1.0
        return out

    names = ["dog", "cat", "car"]
    clf = build_classifier(encode_text, names, templates=["{}"], logit_scale=10.0)
    image = clf.weights[[2, 0, 1]]
    indices, probs = clf.classify(image)
    np.testing.assert_array_equal(indices[:, 0], [2, 0, 1])
    # cos = 1 for the right class, 0 for the others: p = e^10 / (e^10 + 2).
    np.testing.assert_allclose(probs[:, 0], np.exp(10) / (np.exp(10) + 2), rtol=1e-6)


def test_save_load_roundtrip(tmp_path, tiny_clip):
    clf = build_classifier(numpy_encoder(tiny_clip), CLASSES, templates=["a photo of a {}.", "{}"], logit_scale=50.0)
    path = clf.save(tmp_path / "classifier.npz")
    loaded = ZeroShotClassifier.load(path)
    assert loaded.classnames == CLASSES and loaded.templates == ("a photo of a {}.", "{}")
    assert loaded.logit_scale == 50.0
    np.testing.assert_array_equal(loaded.weights, clf.weights)
    assert not list(tmp_path.glob("*.part"))


def test_load_rejects_bad_files(tmp_path):
    with pytest.raises(ArtifactError, match="does not exist"):
        ZeroShotClassifier.load(tmp_path / "missing.npz")
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not an npz")
    with pytest.raises(ArtifactError, match="not a valid"):
        ZeroShotClassifier.load(garbage)
    pickled = tmp_path / "pickled.npz"
    np.savez(
        pickled,
        format=np.int64(1),
        weights=np.eye(2, dtype=np.float32),
        classnames=np.array(["a", None], dtype=object),
        templates=np.array(["{}"]),
        logit_scale=np.float64(100),
    )
    with pytest.raises(ArtifactError, match="not a valid"):
        ZeroShotClassifier.load(pickled)


@pytest.mark.parametrize(
    "classnames, templates, message",
    [
        ([], DEFAULT_TEMPLATES, "non-empty list of class names"),
        ("dog", DEFAULT_TEMPLATES, "non-empty list of class names"),
        (["dog", "dog"], DEFAULT_TEMPLATES, "duplicate"),
        (["dog", ""], DEFAULT_TEMPLATES, "non-empty strings"),
        (["dog"], [], "templates"),
        (["dog"], ["a photo"], "has no"),
    ],
)
def test_bad_class_lists(classnames, templates, message):
    with pytest.raises(InputError, match=message):
        build_classifier(lambda ids: np.ones((len(ids), 4)), classnames, templates)


def test_bad_encoder_output_and_long_names():
    with pytest.raises(InputError, match="encode_text returned shape"):
        build_classifier(lambda ids: np.ones((len(ids) + 1, 4)), ["dog"], ["{}"])
    with pytest.raises(InputError, match="zero or not finite"):
        build_classifier(lambda ids: np.zeros((len(ids), 4)), ["dog"], ["{}"])
    with pytest.raises(InputError, match="class 'word word.*truncate=True"):
        build_classifier(lambda ids: np.ones((len(ids), 4)), ["word " * 90], ["{}"])


def test_bad_classify_inputs():
    clf = ZeroShotClassifier(["a", "b"], np.eye(2, 4, dtype=np.float32), templates=("{}",))
    with pytest.raises(InputError, match="top_k"):
        clf.classify(np.ones((1, 4)), top_k=3)
    with pytest.raises(InputError, match=r"\(N, 4\)"):
        clf.classify(np.ones((1, 5)))
    with pytest.raises(InputError, match="zero or not finite"):
        clf.classify(np.zeros((1, 4)))
