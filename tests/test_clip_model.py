"""edge_mm.clip.model: architecture, hyper-parameter inference, EOT pooling, ONNX export."""

import io
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edge_mm.clip.model import CLIP, LayerNorm, build_model, clip_config_from_state_dict  # noqa: E402
from edge_mm.errors import WeightsError  # noqa: E402

torch.set_num_threads(2)

SOT, EOT = 49406, 49407

# Research sheet §1.7 (open_clip configs / model_profile.csv): name -> (embed, res, vision layers,
# vision width, patch, text width, text heads, text layers, total params in millions).
PUBLISHED_SHAPES = {
    "RN50": (1024, 224, [3, 4, 6, 3], 64, None, 512, 8, 12, 102.01),
    "RN101": (512, 224, [3, 4, 23, 3], 64, None, 512, 8, 12, 119.69),
    "RN50x4": (640, 288, [4, 6, 10, 6], 80, None, 640, 10, 12, 178.30),
    "RN50x16": (768, 384, [6, 8, 18, 8], 96, None, 768, 12, 12, 290.98),
    "RN50x64": (1024, 448, [3, 15, 36, 10], 128, None, 1024, 16, 12, 623.26),
    "ViT-B/32": (512, 224, 12, 768, 32, 512, 8, 12, 151.28),
    "ViT-B/16": (512, 224, 12, 768, 16, 512, 8, 12, 149.62),
    "ViT-L/14": (768, 224, 24, 1024, 14, 768, 12, 12, 427.62),
    "ViT-L/14@336px": (768, 336, 24, 1024, 14, 768, 12, 12, 427.94),
}
OPEN_CLIP_NAMES = {
    "RN50": "RN50-quickgelu",
    "RN101": "RN101-quickgelu",
    "RN50x4": "RN50x4-quickgelu",
    "RN50x16": "RN50x16-quickgelu",
    "RN50x64": "RN50x64-quickgelu",
    "ViT-B/32": "ViT-B-32-quickgelu",
    "ViT-B/16": "ViT-B-16-quickgelu",
    "ViT-L/14": "ViT-L-14-quickgelu",
    "ViT-L/14@336px": "ViT-L-14-336-quickgelu",
}


def tiny_config(**overrides):
    config = dict(
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
    )
    config.update(overrides)
    return config


def tiny_model(seed=0, **overrides):
    torch.manual_seed(seed)
    return CLIP(**tiny_config(**overrides)).eval()


def token_ids(rows, context_length=77, dtype=np.int64):
    """Token id rows as the tokenizer makes them: SOT, words, EOT, zero padding."""
    ids = np.zeros((len(rows), context_length), dtype=dtype)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
    return ids


TEXTS = token_ids(
    [
        [SOT, 320, 1929, EOT],  # "a dog"
        [SOT, 320, 1125, 539, 320, 2368, 269, EOT],  # "a photo of a cat."
        [SOT, 3306, 1002, 256, EOT],  # "Hello World!"
    ]
)
EOT_POSITIONS = [3, 7, 4]


@pytest.mark.parametrize("name", list(PUBLISHED_SHAPES))
def test_config_inferred_from_shapes_for_every_published_model(name):
    """Each published model's hyper-parameters come back from its shapes alone (meta tensors)."""
    open_clip = pytest.importorskip("open_clip")
    with torch.device("meta"):
        reference = open_clip.create_model(OPEN_CLIP_NAMES[name], pretrained=None, device="meta")
    shapes = {k: v for k, v in reference.state_dict().items() if k != "attn_mask"}  # non-persistent there

    embed, res, layers, width, patch, t_width, t_heads, t_layers, params_m = PUBLISHED_SHAPES[name]
    config = clip_config_from_state_dict(shapes)
    assert config == dict(
        embed_dim=embed,
        image_resolution=res,
        vision_layers=layers,
        vision_width=width,
        vision_patch_size=patch,
        context_length=77,
        vocab_size=49408,
        transformer_width=t_width,
        transformer_heads=t_heads,
        transformer_layers=t_layers,
    )

    with torch.device("meta"):
        model = CLIP(**config)
    ours = model.state_dict()
    assert set(ours) == set(shapes), "parameter names must equal OpenAI/open_clip's"
    mismatched = [k for k in ours if ours[k].shape != shapes[k].shape]
    assert not mismatched
    n_params = sum(p.numel() for p in model.parameters())
    assert round(n_params / 1e6, 2) == pytest.approx(params_m, abs=0.006)
    assert (model.image_resolution, model.context_length, model.embed_dim) == (res, 77, embed)


def test_build_model_accepts_openai_jit_metadata_and_checks_it():
    model = tiny_model()
    state = model.state_dict()
    state.update(input_resolution=torch.tensor(32), context_length=torch.tensor(77), vocab_size=torch.tensor(49408))
    rebuilt = build_model(state)
    ids = torch.from_numpy(TEXTS)
    with torch.no_grad():
        assert torch.equal(rebuilt.encode_text(ids), model.encode_text(ids))
    state["input_resolution"] = torch.tensor(64)
    with pytest.raises(WeightsError, match="input_resolution=64"):
        build_model(state)


def test_build_model_makes_partially_fp16_weights_fp32():
    """OpenAI's archives hold fp16 linear/conv/projection weights beside fp32 norms and embeddings."""
    model = tiny_model()
    state = {
        k: v.half() if (v.ndim >= 2 and "embedding" not in k) or k.endswith("proj_bias") else v
        for k, v in model.state_dict().items()
    }
    assert {v.dtype for v in state.values()} == {torch.float16, torch.float32}
    rebuilt = build_model(state)
    assert {p.dtype for p in rebuilt.parameters()} == {torch.float32}
    assert all(p.requires_grad for p in rebuilt.parameters())  # trainable after assign-loading
    with torch.no_grad():
        cos = torch.nn.functional.cosine_similarity(
            rebuilt.encode_text(torch.from_numpy(TEXTS)), model.encode_text(torch.from_numpy(TEXTS)), dim=-1
        )
    assert cos.min().item() > 0.999


def test_build_model_resnet_tower_round_trip():
    model = tiny_model(vision_layers=[1, 1, 1, 1], vision_width=16, image_resolution=64, embed_dim=16)
    with torch.no_grad():
        for p in model.parameters():  # bn3 weights start at zero; make every branch matter
            p.add_(0.05 * torch.randn_like(p))
    rebuilt = build_model(model.state_dict())
    assert clip_config_from_state_dict(model.state_dict())["vision_layers"] == [1, 1, 1, 1]
    image = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(rebuilt.encode_image(image), model.encode_image(image))
    assert rebuilt.dtype == torch.float32 and not rebuilt.training


def test_build_model_errors_name_the_key():
    state = tiny_model().state_dict()
    broken = {k: v for k, v in state.items() if k != "ln_final.weight"}
    with pytest.raises(WeightsError, match="ln_final.weight"):
        build_model(broken)
    broken = dict(state)
    broken["transformer.resblocks.1.mlp.c_fc.weight"] = torch.zeros(128, 64)
    with pytest.raises(WeightsError, match=r"transformer\.resblocks\.1\.mlp\.c_fc\.weight.*\[128, 64\].*\[256, 64\]"):
        build_model(broken)


def test_eot_position_is_an_integer_path_that_survives_fp16():
    ids = torch.from_numpy(TEXTS)
    # Why: fp16 cannot tell SOT from EOT, so OpenAI's float-style argmax picks position 0.
    assert torch.tensor(float(SOT)).half() == torch.tensor(float(EOT)).half()
    assert ids.half().argmax(dim=-1).tolist() == [0, 0, 0]

    model = tiny_model()
    assert model.eot_positions(ids).tolist() == EOT_POSITIONS
    assert model.eot_positions(ids.to(torch.int32)).tolist() == EOT_POSITIONS

    # The pooled vector is the final-LN output at the EOT position, projected.
    captured = {}
    model.ln_final.register_forward_hook(lambda mod, inp, out: captured.setdefault("x", out))
    with torch.no_grad():
        pooled = model.encode_text(ids)
        expected = captured["x"][torch.arange(3), torch.tensor(EOT_POSITIONS)] @ model.text_projection
    assert torch.equal(pooled, expected)

    # In half precision the texts still pool at EOT: distinct embeddings, close to fp32.
    half = tiny_model().half()
    with torch.no_grad():
        h = half.encode_text(ids).float()
    assert h.dtype == torch.float32 and not torch.allclose(h[0], h[1])
    cos = torch.nn.functional.cosine_similarity(h, pooled, dim=-1)
    assert cos.min().item() > 0.999


def test_text_after_eot_does_not_change_the_embedding():
    model = tiny_model()
    noisy = TEXTS.copy()
    for row, eot in zip(noisy, EOT_POSITIONS):
        row[eot + 1 :] = np.random.default_rng(0).integers(1, 40000, size=77 - eot - 1)
    with torch.no_grad():
        clean = model.encode_text(torch.from_numpy(TEXTS))
        dirty = model.encode_text(torch.from_numpy(noisy))
    assert torch.allclose(clean, dirty, atol=1e-6, rtol=0)
    # ...while a change before EOT does (the check is not vacuous).
    changed = TEXTS.copy()
    changed[0, 1] = 2368
    with torch.no_grad():
        assert not torch.allclose(model.encode_text(torch.from_numpy(changed))[0], clean[0], atol=1e-4)


def test_forward_returns_scaled_cosine_logits():
    model = tiny_model()
    image = torch.randn(2, 3, 32, 32)
    ids = torch.from_numpy(TEXTS)
    with torch.no_grad():
        logits_per_image, logits_per_text = model(image, ids)
        img = torch.nn.functional.normalize(model.encode_image(image), dim=-1)
        txt = torch.nn.functional.normalize(model.encode_text(ids), dim=-1)
    assert logits_per_image.shape == (2, 3) and torch.equal(logits_per_text, logits_per_image.t())
    assert torch.allclose(logits_per_image, 100 / 7 * img @ txt.t(), rtol=1e-5, atol=1e-5)  # exp(log(1/0.07))


def test_layernorm_computes_in_fp32_and_casts_back():
    ln = LayerNorm(8).half()
    with torch.no_grad():
        ln.weight.copy_(torch.linspace(0.5, 1.5, 8))
        ln.bias.copy_(torch.linspace(-1, 1, 8))
    x = (torch.randn(4, 8) * 300 + 1000).half()  # variance overflows fp16 if computed there
    out = ln(x)
    reference = torch.nn.functional.layer_norm(x.float(), (8,), ln.weight.float(), ln.bias.float())
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    assert torch.allclose(out.float(), reference, atol=2e-3)


class _TextEncoder(torch.nn.Module):
    def __init__(self, clip):
        super().__init__()
        self.clip = clip

    def forward(self, input_ids):
        return self.clip.encode_text(input_ids)


@pytest.mark.parametrize("id_dtype", [np.int32, np.int64])
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::DeprecationWarning")
def test_encode_text_exports_to_onnx_with_dynamic_batch(id_dtype):
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    model = tiny_model()
    wrapper = _TextEncoder(model).eval()
    buffer = io.BytesIO()
    torch.onnx.export(
        wrapper,
        (torch.from_numpy(TEXTS[:2].astype(id_dtype)),),
        buffer,
        dynamo=False,
        opset_version=17,
        input_names=["input_ids"],
        output_names=["text_embeds"],
        dynamic_axes={"input_ids": {0: "batch"}, "text_embeds": {0: "batch"}},
    )
    graph = onnx.load_from_string(buffer.getvalue()).graph
    ops = {node.op_type for node in graph.node}
    assert "ArgMax" in ops and "GatherElements" in ops

    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    ids = TEXTS.astype(id_dtype)  # batch 3, exported at batch 2
    got = session.run(None, {"input_ids": ids})[0]
    with torch.no_grad():
        expected = model.encode_text(torch.from_numpy(ids)).numpy()
    cos = (got * expected).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected, axis=1)
    assert got.shape == (3, 32)
    assert cos.min() >= 0.99999
    assert math.isclose(float(np.abs(got - expected).max()), 0.0, abs_tol=1e-4)
