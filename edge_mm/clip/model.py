"""CLIP (Radford et al., ICML 2021): the OpenAI architecture in one file.

Parameter names match OpenAI's state dicts (and open_clip's `*-quickgelu` models, which use the same
keys), so published weights load strictly. Two deliberate departures from openai/CLIP, both
numerically identical on tokenizer output:

- The EOT position is found on an integer path, `argmax(ids == eot_id)`, instead of `ids.argmax()`:
  start (49406) and end (49407) round to the same fp16 value, so any float path picks position 0.
- The causal mask is built on each call rather than stored, so a model can be built on the `meta`
  device and its parameters assigned straight from a state dict.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from edge_mm.errors import WeightsError

# Keys that OpenAI's TorchScript archives carry as metadata next to the weights.
JIT_METADATA_KEYS = ("input_resolution", "context_length", "vocab_size")


class Bottleneck(nn.Module):
    """ResNet bottleneck with anti-aliased downsampling: an avgpool before every strided step."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu3 = nn.ReLU(inplace=True)

        self.downsample: Optional[nn.Sequential] = None
        if stride > 1 or inplanes != planes * self.expansion:
            # "-1" is parameter-free, so the conv and BN keep OpenAI's ".0" / ".1" key names.
            self.downsample = nn.Sequential(
                OrderedDict(
                    [
                        ("-1", nn.AvgPool2d(stride)),
                        ("0", nn.Conv2d(inplanes, planes * self.expansion, 1, stride=1, bias=False)),
                        ("1", nn.BatchNorm2d(planes * self.expansion)),
                    ]
                )
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(self.avgpool(out)))
        return self.relu3(out + identity)


class AttentionPool2d(nn.Module):
    """Replaces global average pooling: the mean token attends over all spatial positions."""

    def __init__(self, spacial_dim: int, embed_dim: int, num_heads: int, output_dim: Optional[int] = None):
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.randn(spacial_dim**2 + 1, embed_dim) / embed_dim**0.5)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.c_proj = nn.Linear(embed_dim, output_dim or embed_dim)
        self.num_heads = num_heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(start_dim=2).permute(2, 0, 1)  # NCHW -> (HW)NC
        x = torch.cat([x.mean(dim=0, keepdim=True), x], dim=0)  # (HW+1)NC
        x = x + self.positional_embedding[:, None, :].to(x.dtype)
        x, _ = F.multi_head_attention_forward(
            query=x[:1],
            key=x,
            value=x,
            embed_dim_to_check=x.shape[-1],
            num_heads=self.num_heads,
            q_proj_weight=self.q_proj.weight,
            k_proj_weight=self.k_proj.weight,
            v_proj_weight=self.v_proj.weight,
            in_proj_weight=None,
            in_proj_bias=torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias]),
            bias_k=None,
            bias_v=None,
            add_zero_attn=False,
            dropout_p=0.0,
            out_proj_weight=self.c_proj.weight,
            out_proj_bias=self.c_proj.bias,
            use_separate_proj_weight=True,
            training=self.training,
            need_weights=False,
        )
        return x[0]


class ModifiedResNet(nn.Module):
    """CLIP's ResNet: a 3-conv stem with avgpool, anti-aliased strides, attention pooling."""

    def __init__(
        self, layers: Sequence[int], output_dim: int, heads: int, input_resolution: int = 224, width: int = 64
    ):
        super().__init__()
        self.output_dim = output_dim
        self.input_resolution = input_resolution

        self.conv1 = nn.Conv2d(3, width // 2, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width // 2)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width // 2, width // 2, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width // 2)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(width // 2, width, kernel_size=3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.relu3 = nn.ReLU(inplace=True)
        self.avgpool = nn.AvgPool2d(2)

        self._inplanes = width  # grows as the layers are made
        self.layer1 = self._make_layer(width, layers[0])
        self.layer2 = self._make_layer(width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(width * 8, layers[3], stride=2)

        self.attnpool = AttentionPool2d(input_resolution // 32, width * 32, heads, output_dim)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        layers = [Bottleneck(self._inplanes, planes, stride)]
        self._inplanes = planes * Bottleneck.expansion
        layers += [Bottleneck(self._inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.conv1.weight.dtype)
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.relu2(self.bn2(self.conv2(x)))
        x = self.relu3(self.bn3(self.conv3(x)))
        x = self.avgpool(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.attnpool(x)


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in fp32 whatever the input and parameter dtypes, cast back after."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32 and self.weight.dtype == torch.float32:
            return super().forward(x)  # no Cast nodes in an fp32 ONNX graph
        out = F.layer_norm(x.float(), self.normalized_shape, self.weight.float(), self.bias.float(), self.eps)
        return out.to(x.dtype)


class QuickGELU(nn.Module):
    """The GELU approximation CLIP was trained with; nn.GELU costs accuracy on its weights."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    """Pre-LN transformer block on sequence-first (L, N, D) tensors."""

    def __init__(self, d_model: int, n_head: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(d_model, n_head)
        self.ln_1 = LayerNorm(d_model)
        self.mlp = nn.Sequential(
            OrderedDict(
                [
                    ("c_fc", nn.Linear(d_model, d_model * 4)),
                    ("gelu", QuickGELU()),
                    ("c_proj", nn.Linear(d_model * 4, d_model)),
                ]
            )
        )
        self.ln_2 = LayerNorm(d_model)

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False, attn_mask=attn_mask)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int):
        super().__init__()
        self.width = width
        self.layers = layers
        self.resblocks = nn.Sequential(*[ResidualAttentionBlock(width, heads) for _ in range(layers)])

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x, attn_mask)
        return x


class VisionTransformer(nn.Module):
    def __init__(self, input_resolution: int, patch_size: int, width: int, layers: int, heads: int, output_dim: int):
        super().__init__()
        self.input_resolution = input_resolution
        self.output_dim = output_dim
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)

        scale = width**-0.5
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn((input_resolution // patch_size) ** 2 + 1, width))
        self.ln_pre = LayerNorm(width)
        self.transformer = Transformer(width, layers, heads)
        self.ln_post = LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x).flatten(start_dim=2).permute(0, 2, 1)  # N, grid**2, width
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.ln_pre(x)
        x = self.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)  # via LND
        return self.ln_post(x[:, 0, :]) @ self.proj


class CLIP(nn.Module):
    def __init__(
        self,
        embed_dim: int,
        # vision
        image_resolution: int,
        vision_layers: Union[Sequence[int], int],
        vision_width: int,
        vision_patch_size: Optional[int],
        # text
        context_length: int,
        vocab_size: int,
        transformer_width: int,
        transformer_heads: int,
        transformer_layers: int,
        eot_token_id: Optional[int] = None,
    ):
        super().__init__()
        self.embed_dim = embed_dim
        self.image_resolution = image_resolution
        self.context_length = context_length
        self.vocab_size = vocab_size
        # CLIP's end-of-text token is the last vocabulary entry (49407 of 49408).
        self.eot_token_id = vocab_size - 1 if eot_token_id is None else eot_token_id

        if isinstance(vision_layers, (tuple, list)):
            self.visual: nn.Module = ModifiedResNet(
                layers=vision_layers,
                output_dim=embed_dim,
                heads=vision_width * 32 // 64,
                input_resolution=image_resolution,
                width=vision_width,
            )
        else:
            if vision_patch_size is None:
                raise ValueError("a ViT image tower needs vision_patch_size")
            self.visual = VisionTransformer(
                input_resolution=image_resolution,
                patch_size=vision_patch_size,
                width=vision_width,
                layers=vision_layers,
                heads=vision_width // 64,
                output_dim=embed_dim,
            )

        self.transformer = Transformer(transformer_width, transformer_layers, transformer_heads)
        self.token_embedding = nn.Embedding(vocab_size, transformer_width)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, transformer_width))
        self.ln_final = LayerNorm(transformer_width)
        self.text_projection = nn.Parameter(torch.empty(transformer_width, embed_dim))
        self.logit_scale = nn.Parameter(torch.ones([]) * math.log(1 / 0.07))

        self.initialize_parameters()

    def initialize_parameters(self) -> None:
        """OpenAI's initialisation (for training from scratch and random-weight tests)."""
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)

        if isinstance(self.visual, ModifiedResNet):
            pool = self.visual.attnpool
            std = pool.c_proj.in_features**-0.5
            for linear in (pool.q_proj, pool.k_proj, pool.v_proj, pool.c_proj):
                nn.init.normal_(linear.weight, std=std)
            for stage in (self.visual.layer1, self.visual.layer2, self.visual.layer3, self.visual.layer4):
                for block in stage:
                    nn.init.zeros_(block.bn3.weight)  # each residual branch starts as identity

        width, layers = self.transformer.width, self.transformer.layers
        proj_std = width**-0.5 * (2 * layers) ** -0.5
        attn_std = width**-0.5
        fc_std = (2 * width) ** -0.5
        for block in self.transformer.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
        nn.init.normal_(self.text_projection, std=width**-0.5)

    def build_attention_mask(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """Additive causal mask: 0 on and below the diagonal, -inf above (tokens see only the past)."""
        mask = torch.full((self.context_length, self.context_length), float("-inf"), dtype=dtype, device=device)
        return mask.triu_(1)

    @property
    def dtype(self) -> torch.dtype:
        return self.visual.conv1.weight.dtype

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        return self.visual(image.to(self.dtype))

    def eot_positions(self, text: torch.Tensor) -> torch.Tensor:
        """Index of the first EOT token in each row, computed on integers only (fp16- and ONNX-safe)."""
        return (text == self.eot_token_id).to(torch.int32).argmax(dim=-1)

    def encode_text(self, text: torch.Tensor) -> torch.Tensor:
        x = self.token_embedding(text).to(self.dtype)  # N, L, D
        x = x + self.positional_embedding.to(self.dtype)
        mask = self.build_attention_mask(x.dtype, x.device)
        x = self.transformer(x.permute(1, 0, 2), mask).permute(1, 0, 2)  # via LND
        x = self.ln_final(x).to(self.dtype)

        # Gather with an integer index tensor (ONNX GatherElements) rather than fancy indexing.
        index = self.eot_positions(text).to(torch.int64)[:, None, None].expand(-1, 1, x.shape[-1])
        pooled = x.gather(1, index).squeeze(1)
        return pooled @ self.text_projection

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        image_features = self.encode_image(image)
        text_features = self.encode_text(text)
        image_features = image_features / image_features.norm(dim=1, keepdim=True)
        text_features = text_features / text_features.norm(dim=1, keepdim=True)
        logits_per_image = self.logit_scale.exp() * image_features @ text_features.t()
        return logits_per_image, logits_per_image.t()


# --------------------------------------------------------------------------------------------------
# Building a model from a state dict


def _shape(state_dict: Mapping[str, Any], key: str) -> Tuple[int, ...]:
    try:
        return tuple(state_dict[key].shape)
    except KeyError:
        raise WeightsError(
            f"the state dict has no {key!r}, which is needed to infer the CLIP architecture: "
            "pass an OpenAI/open_clip CLIP state dict (OpenAI key names)"
        ) from None


def _block_indices(state_dict: Mapping[str, Any], prefix: str) -> set:
    """The set of `<i>` in keys `<prefix><i>.…` (prefix like 'transformer.resblocks.')."""
    return {k[len(prefix) :].split(".")[0] for k in state_dict if k.startswith(prefix)}


def clip_config_from_state_dict(state_dict: Mapping[str, Any]) -> Dict[str, Any]:
    """CLIP's constructor arguments, inferred from the shapes of an OpenAI-named state dict.

    Values are JSON-friendly (ResNet layers as a list). Anything with a `.shape` works as a value,
    so tables of shapes (or meta tensors) can be inspected without allocating weights.
    """
    config: Dict[str, Any] = {}
    if "visual.proj" in state_dict:  # ViT
        width, _, patch, _ = _shape(state_dict, "visual.conv1.weight")
        grid = round(math.sqrt(_shape(state_dict, "visual.positional_embedding")[0] - 1))
        layers = len(_block_indices(state_dict, "visual.transformer.resblocks."))
        config.update(image_resolution=patch * grid, vision_layers=layers, vision_width=width, vision_patch_size=patch)
    else:  # ModifiedResNet
        layers = [len(_block_indices(state_dict, f"visual.layer{stage}.")) for stage in (1, 2, 3, 4)]
        width = _shape(state_dict, "visual.layer1.0.conv1.weight")[0]
        tokens = _shape(state_dict, "visual.attnpool.positional_embedding")[0]
        grid = round(math.sqrt(tokens - 1))
        if grid * grid + 1 != tokens:
            raise WeightsError(
                f"visual.attnpool.positional_embedding has {tokens} rows, not a square grid + 1: "
                "the checkpoint is not a CLIP ResNet"
            )
        config.update(image_resolution=grid * 32, vision_layers=layers, vision_width=width, vision_patch_size=None)

    text_width = _shape(state_dict, "ln_final.weight")[0]
    config.update(
        embed_dim=_shape(state_dict, "text_projection")[1],
        context_length=_shape(state_dict, "positional_embedding")[0],
        vocab_size=_shape(state_dict, "token_embedding.weight")[0],
        transformer_width=text_width,
        transformer_heads=text_width // 64,  # CLIP's head width is always 64
        transformer_layers=len(_block_indices(state_dict, "transformer.resblocks.")),
    )
    return config


def _few(keys: List[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    return f"{shown}, … ({len(keys)} in all)" if len(keys) > limit else f"{shown} ({len(keys)} in all)"


def check_state_dict(model: nn.Module, state_dict: Mapping[str, Any]) -> None:
    """Raise WeightsError unless `state_dict` has exactly the model's keys with the same shapes."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    if missing:
        raise WeightsError(
            f"CLIP checkpoint is missing keys: {_few(missing)}; use a complete OpenAI/open_clip CLIP state dict"
        )
    if unexpected:
        raise WeightsError(
            f"CLIP checkpoint has unexpected keys: {_few(unexpected)}; "
            "it is not an OpenAI-layout CLIP state dict (open_clip models must be the -quickgelu/OpenAI configs)"
        )
    for key, tensor in expected.items():
        got = tuple(state_dict[key].shape)
        if got != tuple(tensor.shape):
            raise WeightsError(
                f"CLIP checkpoint key {key!r} has shape {list(got)} but the model inferred from the "
                f"checkpoint needs {list(tensor.shape)}: the checkpoint is inconsistent or not CLIP"
            )


def _check_jit_metadata(state_dict: Mapping[str, Any], config: Mapping[str, Any]) -> None:
    """OpenAI's archives store resolution, context and vocab as tensors; they must agree with the shapes."""
    names = {"input_resolution": "image_resolution", "context_length": "context_length", "vocab_size": "vocab_size"}
    for key, config_key in names.items():
        if key in state_dict:
            value = int(state_dict[key])
            if value != config[config_key]:
                raise WeightsError(
                    f"checkpoint metadata {key}={value} disagrees with the weights' shapes "
                    f"({config_key}={config[config_key]}): the checkpoint is corrupt"
                )


def build_model(state_dict: Mapping[str, torch.Tensor]) -> CLIP:
    """Build an fp32 CLIP in eval mode from an OpenAI-named state dict, loading every key strictly.

    The model is built on the `meta` device and the state dict's tensors are assigned to it, so no
    memory is spent on a random initialisation that would be overwritten.
    """
    state_dict = dict(state_dict)
    config = clip_config_from_state_dict(state_dict)
    _check_jit_metadata(state_dict, config)
    for key in JIT_METADATA_KEYS:
        state_dict.pop(key, None)

    with torch.device("meta"):
        model = CLIP(**config)
    check_state_dict(model, state_dict)
    model.load_state_dict(state_dict, strict=True, assign=True)
    return model.float().eval()


# --------------------------------------------------------------------------- from-scratch shapes

CONTEXT_LENGTH = 77  # the tokenizer, the exported text graph and the runtime all assume 77

# Small CLIPs trained from scratch. Head width is 64 (CLIP's rule; build_model infers heads = width // 64).
SCRATCH_CONFIGS: Dict[str, Dict[str, int]] = {
    # seconds on a CPU: for tests and smoke runs
    "tiny": dict(
        embed_dim=64,
        image_resolution=32,
        vision_layers=1,
        vision_width=64,
        vision_patch_size=8,
        transformer_width=64,
        transformer_layers=1,
    ),
    # the demo model (edge_mm/weights/clip-demo.pt): 64 px input, 8 px patches
    "small": dict(
        embed_dim=128,
        image_resolution=64,
        vision_layers=4,
        vision_width=128,
        vision_patch_size=8,
        transformer_width=128,
        transformer_layers=3,
    ),
}


def build_scratch_model(name: str, seed: int) -> CLIP:
    """A CLIP of SCRATCH_CONFIGS[name] with OpenAI's initialisation, seeded by `seed`."""
    from edge_mm.clip.tokenizer import VOCAB_SIZE

    torch.manual_seed(seed)
    shape = SCRATCH_CONFIGS[name]
    return CLIP(
        context_length=CONTEXT_LENGTH,
        vocab_size=VOCAB_SIZE,
        transformer_heads=shape["transformer_width"] // 64,
        **shape,
    )
