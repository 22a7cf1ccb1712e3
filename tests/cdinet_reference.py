"""An independent functional re-expression of the authors' CDINet forward pass (test oracle).

It follows github.com/1437539743/CDINet-ACM-MM21 (`model/model_vgg.py`, `backbone/VGG.py`,
`modules/EM.py`, `modules/DDR.py`) statement by statement, as plain torch.nn.functional calls over
a state dict with the official key names. It shares no code with edge_mm.cdinet.model, so a test
comparing the two checks the module structure, wiring and layer choices of our implementation.

Channel counts are read from the weight shapes, so any width works. The keyword switches
(`pool`, `semantic_mode`, `decoder_mode`) exist only so tests can show that the parity check is
sensitive to those architectural choices; their defaults are the authors'.

Also here: helpers that build random state dicts from the official key file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

OFFICIAL_KEYS_FILE = Path(__file__).resolve().parent / "data" / "cdinet_official_state_dict_keys.json"

StateDict = Dict[str, Tensor]


# --------------------------------------------------------------------------------------------
# Random weights from the official key list


def official_keys() -> List[Tuple[str, Tuple[int, ...]]]:
    """(name, shape) of every tensor in the official CDINet.pth, in checkpoint order."""
    data = json.loads(OFFICIAL_KEYS_FILE.read_text())
    return [(name, tuple(shape)) for name, shape in data["keys"]]


def random_state_dict(keys: Sequence[Tuple[str, Sequence[int]]], seed: int = 0) -> StateDict:
    """Seeded random tensors for (name, shape) pairs, He-scaled so activations stay O(1) through ~40
    layers without normalisation (a parity check on overflowing or vanishing values would be empty).
    CDINet has no BatchNorm, so there are no running statistics to randomise."""
    gen = torch.Generator().manual_seed(seed)
    out: StateDict = {}
    for name, shape in keys:
        shape = tuple(shape)
        if name.endswith("weight") and len(shape) >= 2:
            fan_in = 1
            for s in shape[1:]:
                fan_in *= s
            out[name] = torch.randn(shape, generator=gen) * (2.0 / fan_in) ** 0.5
        else:
            out[name] = torch.randn(shape, generator=gen) * 0.1
    return out


# --------------------------------------------------------------------------------------------
# The authors' forward pass, functionally


def _conv(sd: StateDict, prefix: str, x: Tensor) -> Tensor:
    """nn.Conv2d(k, stride 1, padding (k-1)/2) with or without bias, from the state dict."""
    weight = sd[prefix + ".weight"]
    return F.conv2d(x, weight, sd.get(prefix + ".bias"), stride=1, padding=weight.shape[-1] // 2)


def _vgg_block(sd: StateDict, stream: str, level: int, x: Tensor, pool: str) -> Tensor:
    # backbone/VGG.py: conv{k} = [pool{k-1} (AvgPool2d(2, stride=2)) if k > 1] + (conv3x3, ReLU) * n
    if level > 1:
        x = F.avg_pool2d(x, 2, 2) if pool == "avg" else F.max_pool2d(x, 2, 2)
    n_convs = 2 if level <= 2 else 3
    for j in range(1, n_convs + 1):
        x = F.relu(_conv(sd, f"{stream}.conv{level}.conv{level}_{j}", x))
    return x


def _rde(sd: StateDict, p: str, input_rgb: Tensor, input_depth: Tensor) -> Tensor:
    # modules/EM.py RDE.forward
    rgbd = torch.cat([input_rgb, input_depth], dim=1)
    feature_pool = _conv(sd, f"{p}.conv_pool.2", F.relu(_conv(sd, f"{p}.conv_pool.0", rgbd)))
    x, _ = torch.max(input_depth, dim=1, keepdim=True)
    x = _conv(sd, f"{p}.conv2", _conv(sd, f"{p}.conv1", x))
    mask = torch.sigmoid(x)
    return feature_pool * mask + input_depth


def _spatial_attention(sd: StateDict, p: str, x: Tensor) -> Tensor:
    max_out, _ = torch.max(x, dim=1, keepdim=True)
    return torch.sigmoid(_conv(sd, f"{p}.conv1", max_out))


def _channel_attention(sd: StateDict, p: str, x: Tensor) -> Tensor:
    b, c, _, _ = x.size()
    y = F.adaptive_avg_pool2d(x, 1).view(b, c)
    y = F.linear(y, sd[f"{p}.fc.0.weight"], sd[f"{p}.fc.0.bias"])
    y = F.relu(y)
    y = F.linear(y, sd[f"{p}.fc.2.weight"], sd[f"{p}.fc.2.bias"])
    y = torch.sigmoid(y).view(b, c, 1, 1)
    return torch.mul(x, y)


def _dse(sd: StateDict, p: str, input_rgb: Tensor, input_depth: Tensor) -> Tuple[Tensor, Tensor]:
    # modules/EM.py DSE.forward
    map_depth = _spatial_attention(sd, f"{p}.sa1", input_depth)
    input_rgb_sa = input_rgb.mul(map_depth) + input_rgb
    input_rgb_sa_ca = _channel_attention(sd, f"{p}.ca1", input_rgb_sa)
    map_depth2 = _spatial_attention(sd, f"{p}.sa2", input_depth)
    input_depth_sa = input_depth.mul(map_depth2) + input_depth
    input_depth_sa_ca = _channel_attention(sd, f"{p}.ca2", input_depth_sa)
    return input_rgb_sa_ca + input_depth_sa_ca, input_depth_sa_ca


def _base_convs(sd: StateDict, p: str, n: int, x: Tensor) -> Tensor:
    # a run of BaseConv2d (conv + ReLU), Sequential indices 0..n-1
    for i in range(n):
        x = F.relu(_conv(sd, f"{p}.{i}.basicconv.0", x))
    return x


def _semantic(sd: StateDict, p: str, x: Tensor) -> Tensor:
    # c_k = Sequential(BaseConv2d 1x1, Conv2d 3x3)
    return _conv(sd, f"{p}.1", F.relu(_conv(sd, f"{p}.0.basicconv.0", x)))


def _ddr(sd: StateDict, decoder_list: List[Tensor], semantic_mode: str, decoder_mode: str) -> Tensor:
    # modules/DDR.py DDR.forward
    def up(x: Tensor, s: int) -> Tensor:  # F.interpolate(x, scale_factor=s), default mode nearest
        if semantic_mode == "nearest":
            return F.interpolate(x, scale_factor=s, mode="nearest")
        return F.interpolate(x, scale_factor=s, mode=semantic_mode, align_corners=False)

    def up2(x: Tensor) -> Tensor:  # nn.Upsample(scale_factor=2, mode='bilinear', align_corners=True)
        if decoder_mode == "nearest":
            return F.interpolate(x, scale_factor=2, mode="nearest")
        return F.interpolate(x, scale_factor=2, mode=decoder_mode, align_corners=True)

    d = decoder_list
    decoder_map5 = up2(_base_convs(sd, "ddr.conv5", 3, d[4]))

    semantic_block4 = _semantic(sd, "ddr.c1", up(d[4], 2))
    assert semantic_block4.size() == d[3].size()
    short4 = torch.mul(semantic_block4, d[3]) + d[3]
    decoder_map4 = up2(_base_convs(sd, "ddr.conv4", 3, torch.cat([decoder_map5, short4], dim=1)))

    semantic_block3 = _semantic(sd, "ddr.c2", torch.cat([up(d[4], 4), up(d[3], 2)], dim=1))
    assert semantic_block3.size() == d[2].size()
    short3 = torch.mul(semantic_block3, d[2]) + d[2]
    decoder_map3 = up2(_base_convs(sd, "ddr.conv3", 3, torch.cat([decoder_map4, short3], dim=1)))

    semantic_block2 = _semantic(sd, "ddr.c3", torch.cat([up(d[4], 8), up(d[3], 4), up(d[2], 2)], dim=1))
    assert semantic_block2.size() == d[1].size()
    short2 = torch.mul(semantic_block2, d[1]) + d[1]
    decoder_map2 = up2(_base_convs(sd, "ddr.conv2", 2, torch.cat([decoder_map3, short2], dim=1)))

    semantic_block1 = _semantic(sd, "ddr.c4", torch.cat([up(d[4], 16), up(d[3], 8), up(d[2], 4), up(d[1], 2)], dim=1))
    assert semantic_block1.size() == d[0].size()
    short1 = torch.mul(semantic_block1, d[0]) + d[0]
    decoder_map1 = _base_convs(sd, "ddr.conv1", 2, torch.cat([decoder_map2, short1], dim=1))

    return _conv(sd, "ddr.conv_map", decoder_map1)


def reference_encoder(sd: StateDict, image: Tensor, depth: Tensor, pool: str = "avg") -> List[Tensor]:
    """model/model_vgg.py CDINet.forward up to the decoder: the decoder_list."""
    depth = torch.cat((depth, depth, depth), dim=1)
    decoder_list = []

    conv1_vgg_r = _vgg_block(sd, "vgg_r", 1, image, pool)
    conv1_vgg_d = _vgg_block(sd, "vgg_d", 1, depth, pool)

    conv2_vgg_d_in = _rde(sd, "rde_layer1", conv1_vgg_r, conv1_vgg_d)
    decoder_list.append(conv2_vgg_d_in)
    conv2_vgg_r = _vgg_block(sd, "vgg_r", 2, conv1_vgg_r, pool)
    conv2_vgg_d = _vgg_block(sd, "vgg_d", 2, conv2_vgg_d_in, pool)

    conv3_vgg_d_in = _rde(sd, "rde_layer2", conv2_vgg_r, conv2_vgg_d)
    decoder_list.append(conv3_vgg_d_in)
    conv3_vgg_r = _vgg_block(sd, "vgg_r", 3, conv2_vgg_r, pool)
    conv3_vgg_d = _vgg_block(sd, "vgg_d", 3, conv3_vgg_d_in, pool)

    conv4_vgg_r_in, conv4_vgg_d_in = _dse(sd, "dse_layer3", conv3_vgg_r, conv3_vgg_d)
    decoder_list.append(conv4_vgg_r_in)
    conv4_vgg_r = _vgg_block(sd, "vgg_r", 4, conv4_vgg_r_in, pool)
    conv4_vgg_d = _vgg_block(sd, "vgg_d", 4, conv4_vgg_d_in, pool)

    conv5_vgg_r_in, conv5_vgg_d_in = _dse(sd, "dse_layer4", conv4_vgg_r, conv4_vgg_d)
    decoder_list.append(conv5_vgg_r_in)
    conv5_vgg_r = _vgg_block(sd, "vgg_r", 5, conv5_vgg_r_in, pool)
    conv5_vgg_d = _vgg_block(sd, "vgg_d", 5, conv5_vgg_d_in, pool)
    conv5_vgg_r_out, _ = _dse(sd, "dse_layer5", conv5_vgg_r, conv5_vgg_d)

    mid_feature = F.relu(_conv(sd, "conv_mid", conv5_vgg_r_out))
    decoder_list.append(mid_feature)
    return decoder_list


@torch.no_grad()
def reference_forward(
    sd: StateDict,
    image: Tensor,
    depth: Tensor,
    pool: str = "avg",
    semantic_mode: str = "nearest",
    decoder_mode: str = "bilinear",
) -> Tensor:
    """The authors' CDINet(image, depth) -> logits, from a state dict with official key names."""
    return _ddr(sd, reference_encoder(sd, image, depth, pool), semantic_mode, decoder_mode)
