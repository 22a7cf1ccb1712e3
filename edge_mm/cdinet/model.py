"""CDINet: Cross-modality Discrepant Interaction Network for RGB-D salient object detection.

Zhang, Cong, Lin, Ma, Li, Zhao, Kwong, ACM Multimedia 2021. This file re-expresses the authors'
computation (github.com/1437539743/CDINet-ACM-MM21) in one readable module. Module and parameter
names follow the official checkpoint, so `edge_mm.cdinet.from_official` loads it strictly.

    rgb   (N,3,H,W) -> VGG16 stream R -+- RDE1, RDE2 (levels 1-2: RGB refines depth) -> skips 1-2
    depth (N,1,H,W) -> VGG16 stream D -+- DSE3..5   (levels 3-5: depth refines RGB)  -> skips 3-5
    skips -> DDR decoder (dense nearest-upsampled semantic blocks) -> logits (N,1,H,W), no sigmoid

Facts that differ from a textbook VGG/U-Net and that the tests pin down:
- the VGG streams pool with AvgPool2d(2, 2), not MaxPool, and stage 1 runs at full resolution;
- depth is replicated to three channels so the depth stream's first conv takes ImageNet weights;
- skips come from the depth stream at levels 1-2 and from the RGB stream at levels 3-5;
- level 5 passes through a 3x3 512->512 conv + ReLU ("conv_mid") before the decoder;
- semantic blocks upsample with nearest, decoder stages with bilinear align_corners=True;
- H and W must be multiples of 16 (the encoder downsamples four times).

`width` scales every channel count (rounded to a multiple of 8) for small CPU variants;
width 1.0 is the published model (54,369,369 parameters).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import List, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edge_mm.errors import InputError, UsageError

OFFICIAL_CHANNELS = (64, 128, 256, 512, 512)  # VGG16 stage widths, levels 1..5
CONVS_PER_STAGE = (2, 2, 3, 3, 3)
CHANNEL_ATTENTION_RATIO = 4  # FC reduction ratio in DSE's channel attention
SIZE_MULTIPLE = 16  # four 2x poolings: H and W must divide by 2**4
DECODER_OUT_CHANNELS = 3  # the last decoder conv has 3 outputs (then a 3->1 conv), in every width

# width multipliers; "cdinet" is the published model (54.4 M parameters). The small ones exist for
# CPU demos and fast tests: cdinet-s has channels (16, 24, 48, 96, 96) and 1.9 M parameters.
VARIANTS = {
    "cdinet": 1.0,
    "cdinet-m": 0.5,
    "cdinet-s": 0.1875,
    "cdinet-xs": 0.125,
}


def scaled_channels(width: float) -> Tuple[int, ...]:
    """Channel counts of levels 1..5 at `width`, each a multiple of 8 (so C/4 stays an integer)."""
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not math.isfinite(width) or width <= 0:
        raise UsageError(f"CDINet width must be a positive number such as 1.0 or 0.25, got {width!r}")
    return tuple(max(8, int(c * width / 8 + 0.5) * 8) for c in OFFICIAL_CHANNELS)


def _is_exporting() -> bool:
    """True while torch.jit / torch.onnx / torch.export trace the model: shape checks must not run then."""
    if torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export():
        return True
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and compiler.is_compiling())


def _conv(c_in: int, c_out: int, kernel_size: int = 3, bias: bool = True) -> nn.Conv2d:
    """A stride-1 'same' convolution, the only kind CDINet uses."""
    return nn.Conv2d(c_in, c_out, kernel_size, stride=1, padding=kernel_size // 2, bias=bias)


# --------------------------------------------------------------------------------------------
# Backbone


class VGG16Stream(nn.Module):
    """VGG16 conv1..conv5 with AvgPool between stages; pool5 and the classifier are not used.

    Stage `k` (k >= 2) starts with `pool{k-1}`, as in the authors' code, so `conv1` keeps the input
    resolution and `conv5` is at 1/16. Layer names match torchvision's VGG16 order one to one.
    """

    def __init__(self, channels: Sequence[int]) -> None:
        super().__init__()
        c_in = 3
        for level, (c_out, n_convs) in enumerate(zip(channels, CONVS_PER_STAGE), start=1):
            layers: "OrderedDict[str, nn.Module]" = OrderedDict()
            if level > 1:
                layers[f"pool{level - 1}"] = nn.AvgPool2d(kernel_size=2, stride=2)
            for j in range(1, n_convs + 1):
                layers[f"conv{level}_{j}"] = _conv(c_in, c_out)
                layers[f"relu{level}_{j}"] = nn.ReLU(inplace=True)
                c_in = c_out
            setattr(self, f"conv{level}", nn.Sequential(layers))

    def forward(self, x: Tensor) -> Tensor:
        return self.conv5(self.conv4(self.conv3(self.conv2(self.conv1(x)))))


# --------------------------------------------------------------------------------------------
# Encoder interaction: RDE (levels 1-2) and DSE (levels 3-5)


class RDE(nn.Module):
    """RGB-induced Detail Enhancement: fused RGB+depth detail, gated by a mask from depth alone."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv_pool = nn.Sequential(
            _conv(2 * channels, channels, kernel_size=1),
            nn.ReLU(inplace=True),
            _conv(channels, channels, kernel_size=3),
        )
        self.conv1 = _conv(1, 1, kernel_size=7, bias=False)
        self.conv2 = _conv(1, 1, kernel_size=7, bias=False)

    def forward(self, rgb: Tensor, depth: Tensor) -> Tensor:
        fused = self.conv_pool(torch.cat([rgb, depth], dim=1))
        # two stacked 7x7 convs on the channel-max of depth, no activation between them
        mask = torch.sigmoid(self.conv2(self.conv1(depth.amax(dim=1, keepdim=True))))
        return fused * mask + depth


class SpatialAttention(nn.Module):
    """A (N,1,H,W) weight map: sigmoid of a 3x3 conv over the channel-max (no average branch)."""

    def __init__(self, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv1 = _conv(1, 1, kernel_size=kernel_size, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.conv1(x.amax(dim=1, keepdim=True)))


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation: x scaled by sigmoid(FC(ReLU(FC(GAP(x)))))."""

    def __init__(self, channels: int, ratio: int = CHANNEL_ATTENTION_RATIO) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(
            nn.Linear(channels, channels // ratio),
            nn.ReLU(inplace=True),
            nn.Linear(channels // ratio, channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        # flatten/None-indexing instead of view(b, c) keeps the batch axis dynamic in ONNX
        weights = torch.sigmoid(self.fc(self.avg_pool(x).flatten(1)))
        return x * weights[:, :, None, None]


class DSE(nn.Module):
    """Depth-induced Semantic Enhancement.

    Returns (enhanced RGB, refined depth): the first goes down the RGB stream and to the skip,
    the second down the depth stream. Both spatial maps come from the depth feature; the RGB path
    keeps a residual (`rgb * map + rgb`) that the paper's figure omits but the code has.
    """

    def __init__(self, channels: int, ratio: int = CHANNEL_ATTENTION_RATIO) -> None:
        super().__init__()
        self.sa1 = SpatialAttention(kernel_size=3)
        self.sa2 = SpatialAttention(kernel_size=3)
        self.ca1 = ChannelAttention(channels, ratio)
        self.ca2 = ChannelAttention(channels, ratio)

    def forward(self, rgb: Tensor, depth: Tensor) -> Tuple[Tensor, Tensor]:
        rgb_out = self.ca1(rgb * self.sa1(depth) + rgb)
        depth_out = self.ca2(depth * self.sa2(depth) + depth)
        return rgb_out + depth_out, depth_out


# --------------------------------------------------------------------------------------------
# Decoder: DDR


class BaseConv(nn.Module):
    """Conv + ReLU; the extra `basicconv` level keeps the official parameter names."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.basicconv = nn.Sequential(_conv(c_in, c_out, kernel_size), nn.ReLU(inplace=True))

    def forward(self, x: Tensor) -> Tensor:
        return self.basicconv(x)


def _upsample_x2() -> nn.Upsample:
    return nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)


def _semantic_block(c_in: int, c_out: int) -> nn.Sequential:
    """1x1 conv + ReLU over the concatenated higher levels, then a 3x3 conv without activation."""
    return nn.Sequential(BaseConv(c_in, c_out, kernel_size=1), _conv(c_out, c_out, kernel_size=3))


class DDR(nn.Module):
    """Dense Decoding Reconstruction.

    Decoder stage k takes [upsampled stage k+1 output, skip_k], where
    skip_k = B_k * f_k + f_k and B_k is a semantic block over *all* higher encoder levels,
    each nearest-upsampled to f_k's resolution. Stages end with a bilinear (align_corners=True)
    2x upsampling; the last one ends in a 3-channel ReLU conv followed by a 3->1 conv (logits).
    """

    def __init__(self, channels: Sequence[int]) -> None:
        super().__init__()
        c1, c2, c3, c4, c5 = channels
        self.conv5 = nn.Sequential(BaseConv(c5, c5), BaseConv(c5, c5), BaseConv(c5, c4), _upsample_x2())
        self.conv4 = nn.Sequential(BaseConv(2 * c4, c4), BaseConv(c4, c4), BaseConv(c4, c3), _upsample_x2())
        self.conv3 = nn.Sequential(BaseConv(2 * c3, c3), BaseConv(c3, c3), BaseConv(c3, c2), _upsample_x2())
        self.conv2 = nn.Sequential(BaseConv(2 * c2, c2), BaseConv(c2, c1), _upsample_x2())
        self.conv1 = nn.Sequential(BaseConv(2 * c1, c1), BaseConv(c1, DECODER_OUT_CHANNELS))
        # semantic blocks, named c1..c4 in the checkpoint; c1 serves level 4, c4 serves level 1
        self.c1 = _semantic_block(c5, c4)
        self.c2 = _semantic_block(c5 + c4, c3)
        self.c3 = _semantic_block(c5 + c4 + c3, c2)
        self.c4 = _semantic_block(c5 + c4 + c3 + c2, c1)
        self.conv_map = _conv(DECODER_OUT_CHANNELS, 1, kernel_size=3)

    @staticmethod
    def _skip(block: nn.Module, higher: Sequence[Tensor], feature: Tensor) -> Tensor:
        """skip = block(cat of higher levels, nearest-upsampled to `feature`) * feature + feature.

        `higher` runs from the coarsest level down; each is 2x coarser than the next, so the
        scale factors are integral powers of two (exported as ONNX Resize with constant scales).
        """
        n = len(higher)
        upsampled = [F.interpolate(f, scale_factor=float(2 ** (n - i)), mode="nearest") for i, f in enumerate(higher)]
        semantic = block(torch.cat(upsampled, dim=1))
        return semantic * feature + feature

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        f1, f2, f3, f4, f5 = features
        x = self.conv5(f5)
        x = self.conv4(torch.cat([x, self._skip(self.c1, [f5], f4)], dim=1))
        x = self.conv3(torch.cat([x, self._skip(self.c2, [f5, f4], f3)], dim=1))
        x = self.conv2(torch.cat([x, self._skip(self.c3, [f5, f4, f3], f2)], dim=1))
        x = self.conv1(torch.cat([x, self._skip(self.c4, [f5, f4, f3, f2], f1)], dim=1))
        return self.conv_map(x)


# --------------------------------------------------------------------------------------------
# The network


class CDINet(nn.Module):
    """CDINet: forward(rgb (N,3,H,W), depth (N,1,H,W)) -> saliency logits (N,1,H,W).

    Inputs are normalised floats (the preprocessing lives outside the network); the output has
    no sigmoid. H and W must be multiples of 16.
    """

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()
        self.width = float(width)
        self.channels = scaled_channels(width)
        c1, c2, c3, c4, c5 = self.channels
        self.vgg_r = VGG16Stream(self.channels)
        self.vgg_d = VGG16Stream(self.channels)
        self.rde_layer1 = RDE(c1)
        self.rde_layer2 = RDE(c2)
        self.dse_layer3 = DSE(c3)
        self.dse_layer4 = DSE(c4)
        self.dse_layer5 = DSE(c5)
        # "transform layer" between encoder and decoder
        self.conv_mid = _conv(c5, c5)
        self.relu_mid = nn.ReLU(inplace=True)
        self.ddr = DDR(self.channels)

    def encode(self, rgb: Tensor, depth: Tensor) -> List[Tensor]:
        """The five skip features f1..f5 (strides 1, 2, 4, 8, 16) that the decoder consumes."""
        depth = torch.cat([depth, depth, depth], dim=1)  # as the authors: 3 channels for VGG weights
        r1 = self.vgg_r.conv1(rgb)
        d1 = self.vgg_d.conv1(depth)
        f1 = self.rde_layer1(r1, d1)  # enhanced depth: skip 1 and input of depth stage 2
        r2 = self.vgg_r.conv2(r1)
        d2 = self.vgg_d.conv2(f1)
        f2 = self.rde_layer2(r2, d2)
        r3 = self.vgg_r.conv3(r2)
        d3 = self.vgg_d.conv3(f2)
        f3, d3 = self.dse_layer3(r3, d3)  # enhanced RGB: skip 3 and input of RGB stage 4
        r4 = self.vgg_r.conv4(f3)
        d4 = self.vgg_d.conv4(d3)
        f4, d4 = self.dse_layer4(r4, d4)
        r5 = self.vgg_r.conv5(f4)
        d5 = self.vgg_d.conv5(d4)
        r5, _ = self.dse_layer5(r5, d5)  # its depth output is unused in the authors' code
        f5 = self.relu_mid(self.conv_mid(r5))
        return [f1, f2, f3, f4, f5]

    def forward(self, rgb: Tensor, depth: Tensor) -> Tensor:
        if not _is_exporting():
            self.check_inputs(rgb, depth)
        return self.ddr(self.encode(rgb, depth))

    def check_inputs(self, rgb: Tensor, depth: Tensor) -> None:
        """Raise InputError unless rgb is (N,3,H,W), depth (N,1,H,W), floats like the weights, H, W % 16 == 0."""
        weight = self.conv_mid.weight
        for name, x, channels in (("rgb", rgb, 3), ("depth", depth, 1)):
            if not isinstance(x, Tensor):
                raise InputError(f"CDINet {name} must be a torch.Tensor, got {type(x).__name__}")
            if x.dim() != 4 or x.shape[1] != channels:
                raise InputError(
                    f"CDINet {name} must have shape (N, {channels}, H, W), got {tuple(x.shape)}; "
                    f"pass a batch of {channels}-channel images in NCHW layout"
                )
            if x.dtype != weight.dtype:
                raise InputError(
                    f"CDINet {name} has dtype {x.dtype} but the model runs in {weight.dtype}; "
                    f"normalise the input and convert it with .to({weight.dtype})"
                )
            if x.device != weight.device:
                raise InputError(
                    f"CDINet {name} is on {x.device} but the model is on {weight.device}; move it with .to()"
                )
        (n, _, h, w), (n_d, _, h_d, w_d) = rgb.shape, depth.shape
        if (n, h, w) != (n_d, h_d, w_d):
            raise InputError(
                f"CDINet rgb and depth differ in batch or size: rgb N,H,W = {n},{h},{w}, depth {n_d},{h_d},{w_d}; "
                "resize depth to the RGB frame"
            )
        if n == 0:
            raise InputError("CDINet got an empty batch (N = 0); pass at least one image")
        if h % SIZE_MULTIPLE or w % SIZE_MULTIPLE:
            raise InputError(
                f"CDINet input size {h}x{w} (HxW) is not a multiple of {SIZE_MULTIPLE}; "
                f"resize to the nearest valid size: {nearest_valid_sizes(h, w)}"
            )


def nearest_valid_sizes(h: int, w: int) -> str:
    """'240x288 or 256x304': the closest HxW below and above that CDINet accepts."""

    def down(x: int) -> int:
        return max(SIZE_MULTIPLE, x // SIZE_MULTIPLE * SIZE_MULTIPLE)

    def up(x: int) -> int:
        return max(SIZE_MULTIPLE, -(-x // SIZE_MULTIPLE) * SIZE_MULTIPLE)

    options = list(dict.fromkeys([f"{down(h)}x{down(w)}", f"{up(h)}x{up(w)}"]))
    return " or ".join(options)


def build(name_or_width: Union[str, float] = "cdinet") -> CDINet:
    """A randomly initialised CDINet by variant name (see VARIANTS) or by width multiplier."""
    if isinstance(name_or_width, str):
        if name_or_width not in VARIANTS:
            raise UsageError(
                f"unknown CDINet variant {name_or_width!r}; "
                f"choose one of {', '.join(VARIANTS)} or pass a width such as 0.5"
            )
        return CDINet(width=VARIANTS[name_or_width])
    return CDINet(width=name_or_width)
