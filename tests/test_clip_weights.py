"""edge_mm.clip.load: parity with open_clip, TorchScript archives, downloads, strict loading."""

import hashlib
import math
import os
import pickle
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from test_download import FileServer  # noqa: E402  (tests/ is on sys.path under pytest)

import edge_mm.clip as clip  # noqa: E402
from edge_mm.clip import weights  # noqa: E402
from edge_mm.clip.model import CLIP  # noqa: E402
from edge_mm.clip.preprocess import ClipPreprocess  # noqa: E402
from edge_mm.clip.tokenizer import tokenize  # noqa: E402
from edge_mm.errors import DownloadError, WeightsError  # noqa: E402
from edge_mm.hashing import sha256_file  # noqa: E402

torch.set_num_threads(2)

SOT, EOT = 49406, 49407
PARITY_RTOL = 1e-5


def token_ids(rows, context_length=77):
    ids = torch.zeros(len(rows), context_length, dtype=torch.int64)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
    return ids


TEXTS = torch.from_numpy(tokenize(["a photo of a cat.", "a dog"]))


def test_texts_are_openai_token_ids():
    """OpenAI's ids for the parity texts (research sheet §1.6): a tokenizer bug cannot hide below."""
    assert torch.equal(TEXTS, token_ids([[SOT, 320, 1125, 539, 320, 2368, 269, EOT], [SOT, 320, 1929, EOT]]))


def max_relative_diff(got: torch.Tensor, expected: torch.Tensor) -> float:
    """max |got - expected| over max |expected| (per-element ratios blow up near zero)."""
    return ((got - expected).abs().max() / expected.abs().max()).item()


def randomize_(model: torch.nn.Module, seed: int) -> None:
    """Give every weight a seeded random value, so that no zero-initialised tensor hides a bug.

    Uniform noise with the intended standard deviation (cheaper than normal for ~150 M values).
    """
    generator = torch.Generator().manual_seed(seed)

    def noise_(tensor, mean, std):
        half_width = std * math.sqrt(3.0)
        tensor.uniform_(mean - half_width, mean + half_width, generator=generator)

    with torch.no_grad():
        for name, tensor in model.state_dict(keep_vars=True).items():
            if not tensor.is_floating_point():
                continue  # num_batches_tracked
            if name.endswith("running_var"):
                tensor.uniform_(0.5, 1.5, generator=generator)
            elif name == "logit_scale":
                tensor.fill_(math.log(50.0))
            elif tensor.ndim == 1 and name.endswith(".weight"):  # LayerNorm / BatchNorm scales
                noise_(tensor, 1.0, 0.1)
            elif tensor.ndim >= 2:
                noise_(tensor, 0.0, 1.0 / math.sqrt(tensor[0].numel()))
            else:
                noise_(tensor, 0.0, 0.1)


def tiny_model(seed=0):
    torch.manual_seed(seed)
    model = CLIP(
        embed_dim=32,
        image_resolution=32,
        vision_layers=2,
        vision_width=64,
        vision_patch_size=16,
        context_length=77,
        vocab_size=49408,
        transformer_width=64,
        transformer_heads=1,
        transformer_layers=2,
    ).eval()
    randomize_(model, seed)
    return model


def outputs(model, image, text):
    with torch.no_grad():
        return model.encode_image(image), model.encode_text(text)


# --------------------------------------------------------------------------------------------------
# Parity against open_clip (the oracle), random weights, fp32 on the CPU


PARITY_MODELS = ["ViT-B-32-quickgelu", "ViT-B-16-quickgelu", "RN50-quickgelu"]
# The archive reader is tower-agnostic; one ViT and the ResNet keep the test time down.
ARCHIVE_MODELS = ["ViT-B-32-quickgelu", "RN50-quickgelu"]


@pytest.fixture(scope="module")
def open_clip_case(request):
    """(name, randomised open_clip model, images, its encode_image and encode_text outputs)."""
    open_clip = pytest.importorskip("open_clip")
    reference = open_clip.create_model(request.param, pretrained=None).eval()
    randomize_(reference, seed=1)
    assert all(t.abs().max() > 0 for t in reference.state_dict().values() if t.is_floating_point())
    image = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    expected_image, expected_text = outputs(reference, image, TEXTS)
    # Guard against a vacuous comparison: distinct inputs must give distinct features.
    assert not torch.allclose(expected_image[0], expected_image[1], atol=1e-3)
    assert not torch.allclose(expected_text[0], expected_text[1], atol=1e-3)
    yield request.param, reference, image, expected_image, expected_text


@pytest.fixture
def scratch(tmp_path):
    """A file path whose (large) file is removed after the test, not kept by pytest."""
    path = tmp_path / "weights.pt"
    yield path
    path.unlink(missing_ok=True)


def _check_parity(model, case, route):
    name, _, image, expected_image, expected_text = case
    got_image, got_text = outputs(model, image, TEXTS)
    image_diff = max_relative_diff(got_image, expected_image)
    text_diff = max_relative_diff(got_text, expected_text)
    print(f"\n{name} via {route}: max rel diff encode_image {image_diff:.2e}, encode_text {text_diff:.2e}")
    assert image_diff <= PARITY_RTOL and text_diff <= PARITY_RTOL


@pytest.mark.parametrize("open_clip_case", PARITY_MODELS, indirect=True)
def test_open_clip_state_dict_loads_and_matches(open_clip_case, scratch):
    _, reference, *_ = open_clip_case
    torch.save(reference.state_dict(), scratch)
    model, preprocess = clip.load(scratch)
    assert isinstance(model, CLIP) and not model.training
    assert model.source_sha256 == sha256_file(scratch)
    assert preprocess == ClipPreprocess(image_size=224)
    _check_parity(model, open_clip_case, "state dict")


@pytest.mark.parametrize("open_clip_case", ARCHIVE_MODELS, indirect=True)
@pytest.mark.filterwarnings(
    "ignore::FutureWarning", "ignore::torch.jit.TracerWarning", "ignore:.*TorchScript archive:UserWarning"
)
def test_traced_torchscript_archive_loads_and_matches(open_clip_case, scratch):
    """OpenAI publishes traced TorchScript archives; torch.load(weights_only=True) refuses them."""
    _, reference, image, *_ = open_clip_case
    with torch.no_grad():
        traced = torch.jit.trace(reference, (image[:1], TEXTS[:1]), check_trace=False)
    torch.jit.save(traced, str(scratch))
    del traced
    with pytest.raises(RuntimeError, match="TorchScript"):
        torch.load(scratch, weights_only=True)
    model, _ = clip.load(str(scratch))
    _check_parity(model, open_clip_case, "TorchScript archive")


# --------------------------------------------------------------------------------------------------
# Published names: download, verify, cache (served from 127.0.0.1)


@pytest.fixture
def tiny_archive(tmp_path):
    """A small traced CLIP archive, like OpenAI's files but tiny; returns (model, bytes, sha256)."""
    model = tiny_model()
    path = tmp_path / "tiny.pt"
    with torch.no_grad():
        torch.jit.save(torch.jit.trace(model, (torch.randn(1, 3, 32, 32), TEXTS[:1]), check_trace=False), str(path))
    data = path.read_bytes()
    return model, data, hashlib.sha256(data).hexdigest()


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::torch.jit.TracerWarning")
def test_published_name_downloads_once_and_verifies(tiny_archive, tmp_path, monkeypatch):
    model, data, sha = tiny_archive
    # The real checksums name real files; register the tiny archive under a published name.
    monkeypatch.setitem(weights.PUBLISHED, "ViT-B/32", weights.PublishedWeights("ViT-B-32.pt", sha))
    monkeypatch.setenv("EDGE_MM_CACHE", str(tmp_path / "cache"))
    with FileServer({f"/clip/models/{sha}/ViT-B-32.pt": data}) as server:
        monkeypatch.setenv("EDGE_MM_CLIP_URL_BASE", server.url + "/clip/models")
        loaded, preprocess = clip.load("ViT-B/32")
        again, _ = clip.load("ViT-B/32")
    assert server.requests == [f"/clip/models/{sha}/ViT-B-32.pt"]  # the second load used the cache
    assert Path(loaded.source_path) == tmp_path / "cache" / "clip" / "ViT-B-32.pt"
    assert loaded.source_sha256 == sha == again.source_sha256
    assert preprocess.image_size == 32
    image = torch.randn(2, 3, 32, 32)
    for got, expected in zip(outputs(loaded, image, TEXTS), outputs(model, image, TEXTS)):
        assert torch.equal(got, expected)


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::torch.jit.TracerWarning")
def test_published_name_with_wrong_bytes_caches_nothing(tiny_archive, tmp_path, monkeypatch):
    _, data, _ = tiny_archive
    real = weights.PUBLISHED["RN50"]
    monkeypatch.setenv("EDGE_MM_CACHE", str(tmp_path / "cache"))
    with FileServer({f"/{real.sha256}/RN50.pt": data}) as server:
        monkeypatch.setenv("EDGE_MM_CLIP_URL_BASE", server.url)
        with pytest.raises(DownloadError, match=f"expected sha256 {real.sha256}.*nothing was cached"):
            clip.load("RN50")
    cached = tmp_path / "cache" / "clip"
    assert not cached.exists() or list(cached.iterdir()) == []


def test_available_models_and_urls():
    names = clip.available_models()
    assert names == [
        "RN50",
        "RN101",
        "RN50x4",
        "RN50x16",
        "RN50x64",
        "ViT-B/32",
        "ViT-B/16",
        "ViT-L/14",
        "ViT-L/14@336px",
    ]
    assert weights.published_url("ViT-L/14@336px") == (
        "https://openaipublic.azureedge.net/clip/models/"
        "3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02/ViT-L-14-336px.pt"
    )


# --------------------------------------------------------------------------------------------------
# Strict loading and bad files


@pytest.fixture
def tiny_state(tmp_path):
    model = tiny_model()
    return model, model.state_dict()


def _assert_loads_like(path, model):
    loaded, _ = clip.load(path)
    image = torch.randn(2, 3, 32, 32)
    for got, expected in zip(outputs(loaded, image, TEXTS), outputs(model, image, TEXTS)):
        assert torch.equal(got, expected)


def test_missing_key_is_named(tiny_state, tmp_path):
    _, state = tiny_state
    del state["transformer.resblocks.0.attn.out_proj.bias"]
    torch.save(state, tmp_path / "w.pt")
    missing = r"missing keys: transformer\.resblocks\.0\.attn\.out_proj\.bias \(1 in all\)"
    with pytest.raises(WeightsError, match=missing) as info:
        clip.load(tmp_path / "w.pt")
    assert str(info.value).startswith(f"{tmp_path / 'w.pt'}: ") and "\n" not in str(info.value)


def test_many_missing_keys_are_counted(tiny_state, tmp_path):
    _, state = tiny_state
    state = {k: v for k, v in state.items() if not k.startswith("transformer.resblocks.1.")}
    state["transformer.resblocks.1.ln_1.weight"] = torch.ones(64)  # keeps the layer count at 2
    torch.save(state, tmp_path / "w.pt")
    with pytest.raises(WeightsError, match=r"missing keys: .*, … \(11 in all\)"):
        clip.load(tmp_path / "w.pt")


def test_unexpected_key_is_named(tiny_state, tmp_path):
    _, state = tiny_state
    state["visual.extra_head.weight"] = torch.zeros(3)
    torch.save(state, tmp_path / "w.pt")
    with pytest.raises(WeightsError, match=r"unexpected keys: visual\.extra_head\.weight"):
        clip.load(tmp_path / "w.pt")


def test_open_clip_checkpoint_wrapper_and_module_prefix(tiny_state, tmp_path):
    model, state = tiny_state
    checkpoint = {"epoch": 3, "name": "run", "state_dict": {f"module.{k}": v for k, v in state.items()}}
    torch.save(checkpoint, tmp_path / "epoch_3.pt")
    _assert_loads_like(tmp_path / "epoch_3.pt", model)


def test_safetensors_file(tiny_state, tmp_path):
    safetensors = pytest.importorskip("safetensors.torch")
    model, state = tiny_state
    safetensors.save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "w.safetensors"))
    _assert_loads_like(tmp_path / "w.safetensors", model)


def test_corrupt_files_are_weights_errors(tiny_state, tmp_path):
    _, state = tiny_state
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(os.urandom(4096))
    with pytest.raises(WeightsError, match=f"cannot load CLIP weights: {garbage} is not a checkpoint"):
        clip.load(garbage)

    good = tmp_path / "good.pt"
    torch.save(state, good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(WeightsError, match=f"{truncated} is truncated"):
        clip.load(truncated)

    listed = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], listed)
    with pytest.raises(WeightsError, match="holds a list, not a state dict"):
        clip.load(listed)

    with pytest.raises(WeightsError, match="neither a published CLIP model nor an existing file"):
        clip.load(tmp_path / "absent.pt")


class _Payload:
    """Unpickling this would create a marker file: the loader must refuse it."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_arbitrary_pickles_are_refused(tmp_path):
    marker = tmp_path / "was-unpickled"
    path = tmp_path / "evil.pt"
    torch.save({"visual.proj": _Payload(marker)}, path)
    with pytest.raises(WeightsError, match="is a pickle that would run code when loaded"):
        clip.load(path)
    assert not marker.exists()
    # The payload is live: a plain unpickler runs it.
    pickle.loads(pickle.dumps(_Payload(tmp_path / "control")))
    assert (tmp_path / "control").exists()
