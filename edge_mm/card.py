"""Model cards: a TOML file that says what a third-party ONNX graph needs (stdlib only).

`python -m export.import_onnx` reads a card, checks it against the graph (`GraphInfo`, read from
the ONNX file by the caller) and turns it into the edge-mm model spec (edge_mm.spec.ModelSpec) that
the runtime already follows. Every field is documented in docs/model_card.md; examples are in
export/cards/. A card that contradicts the graph, or a graph edge-mm cannot run, is a CardError of
one line that names both sides.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from edge_mm.errors import CardError
from edge_mm.rgbd import IMAGENET_MEAN, IMAGENET_STD, INPUT_RANGES, RgbdPreprocess
from edge_mm.spec import ModelSpec, TensorSpec

try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - 3.10 uses the tomli backport (a pyproject dependency there)
    import tomli as tomllib  # type: ignore[no-redef]

CARD_FORMAT = 1
SALIENCY_CARD_KINDS = ("rgbd-saliency", "rgb-saliency")
CARD_KINDS = SALIENCY_CARD_KINDS + ("clip",)
LAYOUTS = ("NCHW", "NHWC")
OUTPUT_LAYOUTS = ("NCHW", "NHWC", "NHW")
MEANINGS = ("probability", "logits")
# Card name -> the spec's tokenizer id (edge_mm.registry.clip_text_spec writes the same id).
TOKENIZER_IDS = {"clip-bpe": "openai-clip-bpe-49408"}  # edge_mm.clip.tokenizer: OpenAI's BPE, 49408 ids
TOKENIZERS = tuple(TOKENIZER_IDS)
EOT_MODES = ("argmax",)  # the graph pools at the largest id, CLIP BPE's end-of-text token 49407
# TensorRT's ONNX parser reads opsets 9-25 (TensorRT 11.5; NVIDIA's ONNX opset guide). edge-mm's INT8
# variant places per-channel Q/DQ, which needs opset 13.
TRT_OPSETS = (9, 25)
INT8_MIN_OPSET = 13
DEFAULT_BATCH = (1, 1, 8)

_COMMON_KEYS = {"role", "layout"}
_ROLE_KEYS = {
    "rgb": _COMMON_KEYS
    | {"colour_order", "size", "min_size", "max_size", "scaling", "mean", "std", "resize", "antialias", "crop"},
    "depth": _COMMON_KEYS
    | {
        "size",
        "scaling",
        "mean",
        "std",
        "range_m",
        "normalise",
        "near_is_bright",
        "quantize_8bit",
        "hole_value",
    },
    "ids": {"role", "tokenizer", "context_length", "eot", "pad_id"},
}
ROOT = ""  # the `where` of the card's top level
_SALIENCY_OUTPUT_KEYS = {"name", "meaning", "layout", "channel", "resize"}
_EMBEDDING_OUTPUT_KEYS = {"name", "normalized"}


# ---- what the importer tells us about the graph ----------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str  # numpy name: float32, int64, ...
    shape: Tuple[Union[int, str], ...]  # int for a fixed axis, a name (or "?") for a dynamic one

    def describe(self) -> str:
        return f"{self.name}[{','.join(str(d) for d in self.shape)}]"


@dataclasses.dataclass(frozen=True)
class GraphInfo:
    """The facts of one ONNX graph a card is checked against (export.import_onnx reads them)."""

    inputs: Tuple[TensorInfo, ...]
    outputs: Tuple[TensorInfo, ...]
    opset: int
    custom_domains: Tuple[str, ...] = ()  # node domains other than ai.onnx
    where: str = "the graph"

    def describe_inputs(self) -> str:
        return ", ".join(t.describe() for t in self.inputs) or "none"

    def describe_outputs(self) -> str:
        return ", ".join(t.describe() for t in self.outputs) or "none"


# ---- reading ------------------------------------------------------------------------------------


def read_card(path: Union[str, Path]) -> Dict[str, Any]:
    """The card's TOML as a dict; a missing or malformed file is a CardError."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise CardError(f"no model card at {path}; write one (see docs/model_card.md)") from None
    except tomllib.TOMLDecodeError as exc:
        raise CardError(f"model card {path} is not valid TOML ({exc}); fix the line it names") from None
    except OSError as exc:
        raise CardError(f"cannot read model card {path} ({exc.strerror}); check the path") from None
    return data


def _table(data: Dict[str, Any], key: str, where: str) -> Dict[str, Any]:
    value = data.get(key)
    if not isinstance(value, dict):
        raise CardError(f"card has no [{where}] table; add it (see docs/model_card.md)")
    return value


def _at(where: str) -> str:
    """How a message names a place in the card: "card" (its root) or "card [inputs.rgb]"."""
    return "card" if where == ROOT else f"card [{where}]"


def _unknown(table: Dict[str, Any], known: set, where: str) -> None:
    extra = sorted(set(table) - known)
    if extra:
        raise CardError(f"{_at(where)} has unknown key {extra[0]!r}; known keys: {', '.join(sorted(known))}")


def _choice(table: Dict[str, Any], key: str, allowed: Sequence[Any], default: Any, where: str) -> Any:
    value = table.get(key, default)
    if value not in allowed:
        raise CardError(f"{_at(where)} {key} = {value!r} is not one of {', '.join(map(repr, allowed))}")
    return value


def _numbers(table: Dict[str, Any], key: str, count: int, default: Any, where: str) -> Tuple[float, ...]:
    value = table.get(key, default)
    if count == 1 and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value]
    ok = isinstance(value, (list, tuple)) and len(value) == count
    ok = ok and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    if not ok:
        raise CardError(f"card [{where}] {key} = {value!r} must be {count} number(s)")
    return tuple(float(v) for v in value)


def _bool(table: Dict[str, Any], key: str, default: bool, where: str) -> bool:
    value = table.get(key, default)
    if not isinstance(value, bool):
        raise CardError(f"card [{where}] {key} = {value!r} must be true or false")
    return value


def _size(value: Any, key: str, where: str) -> Tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value, value]
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) and v > 0 for v in value)):
        raise CardError(f"card [{where}] {key} = {value!r} must be a positive int or [height, width]")
    return int(value[0]), int(value[1])


# ---- checks against the graph -------------------------------------------------------------------


def check_opset(graph: GraphInfo, int8: bool = True) -> None:
    lo, hi = TRT_OPSETS
    if not lo <= graph.opset <= hi:
        raise CardError(
            f"{graph.where} has opset {graph.opset}; TensorRT's ONNX parser reads opsets {lo}-{hi}: "
            f"convert it (onnx.version_converter) to an opset in that range"
        )
    if int8 and graph.opset < INT8_MIN_OPSET:
        raise CardError(
            f"{graph.where} has opset {graph.opset}; the int8 variant needs opset {INT8_MIN_OPSET} or later: "
            "convert it with onnx.version_converter, or import with --precision fp32,fp16"
        )
    if graph.custom_domains:
        raise CardError(
            f"{graph.where} uses operators of the custom domain {graph.custom_domains[0]!r}, which TensorRT's ONNX "
            "parser cannot read without a plugin; export the model with standard ONNX operators"
        )


def _graph_input(graph: GraphInfo, name: str) -> TensorInfo:
    for tensor in graph.inputs:
        if tensor.name == name:
            return tensor
    raise CardError(f"card input {name!r} is not in the graph; the graph's inputs are {graph.describe_inputs()}")


def _graph_output(graph: GraphInfo, name: Optional[str]) -> TensorInfo:
    if name is None:
        if not graph.outputs:
            raise CardError(f"{graph.where} has no outputs")
        return graph.outputs[0]
    for tensor in graph.outputs:
        if tensor.name == name:
            return tensor
    raise CardError(f"card output {name!r} is not in the graph; the graph's outputs are {graph.describe_outputs()}")


def _card_inputs(section: Dict[str, Any], graph: GraphInfo, where: str) -> Dict[str, Dict[str, Any]]:
    """{graph input name: its card table}; every graph input must have one, and only graph inputs."""
    inputs = _table(section, "inputs", f"{where}inputs")
    for name, table in inputs.items():
        if not isinstance(table, dict):
            raise CardError(f"card [{where}inputs] {name} must be a table [{where}inputs.{name}]")
        _graph_input(graph, name)
    for tensor in graph.inputs:
        if tensor.name not in inputs:
            raise CardError(
                f"graph input {tensor.describe()} has no card entry; add [{where}inputs.{tensor.name}] with its role "
                f"(card inputs: {', '.join(inputs) or 'none'})"
            )
    return inputs


def _image_axes(tensor: TensorInfo, layout: str, channels: Sequence[int], name: str, where: str) -> Tuple[Any, Any]:
    """(H, W) dims of an image input after checking rank and channels against the layout."""
    if len(tensor.shape) != 4:
        raise CardError(
            f"card [{where}] says layout {layout} but the graph's {tensor.describe()} has rank {len(tensor.shape)}, not 4"
        )
    channel_axis = 1 if layout == "NCHW" else 3
    found = tensor.shape[channel_axis]
    if found not in channels:
        wanted = " or ".join(str(c) for c in channels)
        raise CardError(
            f"card [{where}] says layout {layout} ({wanted} channels on axis {channel_axis}) but the graph's "
            f"{name} is {tensor.describe()}; fix the card's layout"
        )
    return (tensor.shape[1], tensor.shape[2]) if layout == "NHWC" else (tensor.shape[2], tensor.shape[3])


def _check_float(tensor: TensorInfo, where: str) -> None:
    if tensor.dtype != "float32":
        raise CardError(
            f"the graph's input {tensor.describe()} is {tensor.dtype}; edge-mm feeds float32 images: "
            f"re-export with a float32 input ([{where}])"
        )


def _fit_size(card_size: Optional[Tuple[int, int]], dims: Tuple[Any, Any], tensor: TensorInfo, where: str):
    fixed = tuple(d if isinstance(d, int) else None for d in dims)
    if card_size is None:
        if None in fixed:
            raise CardError(
                f"the graph's {tensor.describe()} has dynamic height/width; give the size frames are resized to: "
                f"[{where}] size = [H, W]"
            )
        return fixed
    for axis, (want, have) in enumerate(zip(card_size, fixed)):
        if have is not None and have != want:
            raise CardError(
                f"card [{where}] size {list(card_size)} does not fit the graph's {tensor.describe()} "
                f"(fixed {'height' if axis == 0 else 'width'} {have})"
            )
    return card_size


def _batch_axis(tensor: TensorInfo, where: str, dynamic_needed: bool) -> Tuple[int, int, int]:
    """The engine profile's batch range: dynamic -> (1, 1, 8); a fixed batch must be 1 (saliency only)."""
    batch = tensor.shape[0] if tensor.shape else None
    if not isinstance(batch, int):
        return DEFAULT_BATCH
    if dynamic_needed:
        raise CardError(
            f"the graph's {tensor.describe()} has a fixed batch of {batch}; edge-mm embeds in batches: re-export it "
            f"with a dynamic batch axis ([{where}])"
        )
    if batch != 1:
        raise CardError(
            f"the graph's {tensor.describe()} has a fixed batch of {batch}; re-export it with batch 1 or dynamic"
        )
    return (1, 1, 1)


# ---- saliency cards --------------------------------------------------------------------------------


def _saliency_output(card: Dict[str, Any], graph: GraphInfo) -> Tuple[TensorInfo, Dict[str, Any], str]:
    table = _table(card, "output", "output")
    _unknown(table, _SALIENCY_OUTPUT_KEYS, "output")
    tensor = _graph_output(graph, table.get("name"))
    meaning = _choice(table, "meaning", MEANINGS, None, "output")
    _choice(table, "resize", ("bilinear",), "bilinear", "output")
    rank_layout = {4: "NCHW", 3: "NHW"}
    layout = table.get("layout", rank_layout.get(len(tensor.shape), "NCHW"))
    layout = _choice({"layout": layout}, "layout", OUTPUT_LAYOUTS, None, "output")
    channel = table.get("channel", 0)
    if len(tensor.shape) != len(layout):
        raise CardError(
            f"graph output {tensor.describe()} cannot be a saliency map: it has rank {len(tensor.shape)}; a map is "
            f"[N,C,H,W] (NCHW), [N,H,W,C] (NHWC) or [N,H,W] (NHW), card [output] says {layout}"
        )
    if layout != "NHW":
        channels = tensor.shape[1 if layout == "NCHW" else 3]
        if not isinstance(channel, int) or isinstance(channel, bool) or channel < 0:
            raise CardError(f"card [output] channel = {channel!r} must be an int >= 0")
        if isinstance(channels, int) and channel >= channels:
            raise CardError(
                f"card [output] channel {channel} is not in the graph's {tensor.describe()} ({channels} channel(s) "
                f"on the {layout} channel axis)"
            )
    spatial = tensor.shape[1:3] if layout in ("NHWC", "NHW") else tensor.shape[2:4]
    if any(isinstance(d, int) and d < 2 for d in spatial):
        raise CardError(
            f"graph output {tensor.describe()} cannot be a saliency map with layout {layout}: its height/width "
            f"{list(spatial)} are not an image; fix [output] layout or name another output"
        )
    post = {
        "output": meaning,
        "activation": "sigmoid" if meaning == "logits" else "none",
        "output_name": tensor.name,
        "channel": int(channel) if layout != "NHW" else 0,
        "resize": "bilinear",
    }
    return tensor, post, layout


def _rgbd_preprocess(
    rgb: Dict[str, Any], depth: Optional[Dict[str, Any]], size: Tuple[int, int], rgb_where: str, depth_where: str
) -> RgbdPreprocess:
    w = rgb_where
    fields: Dict[str, Any] = {
        "size": size,
        "colour_order": _choice(rgb, "colour_order", ("rgb", "bgr"), "rgb", w),
        "rgb_mean": _numbers(rgb, "mean", 3, IMAGENET_MEAN, w),
        "rgb_std": _numbers(rgb, "std", 3, IMAGENET_STD, w),
        "rgb_input_range": _choice(rgb, "scaling", INPUT_RANGES, "0-1", w),
        "interpolation": _choice(rgb, "resize", ("bilinear", "bicubic", "area", "nearest"), "bilinear", w),
        "antialias": _bool(rgb, "antialias", True, w),
    }
    if depth is not None:
        where = depth_where
        range_m = depth.get("range_m", [0.2, 6.0])
        fields.update(
            depth_mean=_numbers(depth, "mean", 1, 0.485, where)[0],
            depth_std=_numbers(depth, "std", 1, 0.229, where)[0],
            depth_input_range=_choice(depth, "scaling", INPUT_RANGES, "0-1", where),
            depth_range_m=None if range_m == "none" else _numbers(depth, "range_m", 2, None, where),
            depth_scaling=_choice(depth, "normalise", ("frame", "range"), "frame", where),
            near_is_bright=_bool(depth, "near_is_bright", True, where),
            quantize_depth_8bit=_bool(depth, "quantize_8bit", False, where),
            hole_value=_numbers(depth, "hole_value", 1, 0.0, where)[0],
        )
    if min(fields["rgb_std"]) <= 0 or fields.get("depth_std", 1.0) <= 0:
        raise CardError("card std values must be positive (a zero std divides by zero)")
    try:
        return RgbdPreprocess(**fields)
    except Exception as exc:  # UsageError from the dataclass checks, e.g. near >= far
        raise CardError(f"card preprocessing is invalid: {exc}") from None


def saliency_spec(card: Dict[str, Any], graph: GraphInfo, name: str) -> ModelSpec:
    kind = card["kind"]
    inputs = _card_inputs(card, graph, "")
    by_role: Dict[str, Tuple[str, Dict[str, Any]]] = {}
    for input_name, table in inputs.items():
        role = _choice(table, "role", ("rgb", "depth"), None, f"inputs.{input_name}")
        if role in by_role:
            raise CardError(
                f"card inputs {by_role[role][0]!r} and {input_name!r} both have role {role!r}; give each its own role"
            )
        by_role[role] = (input_name, table)
    for role, (input_name, table) in by_role.items():
        _unknown(table, _ROLE_KEYS[role], f"inputs.{input_name}")
    if "rgb" not in by_role:
        raise CardError(f"card has no input with role 'rgb'; the graph's inputs are {graph.describe_inputs()}")
    if kind == "rgbd-saliency" and "depth" not in by_role:
        raise CardError(
            f"card kind 'rgbd-saliency' needs an input with role 'depth'; the graph's inputs are {graph.describe_inputs()} "
            "(an RGB-only model is kind 'rgb-saliency')"
        )
    if kind == "rgb-saliency" and "depth" in by_role:
        raise CardError(f"card kind 'rgb-saliency' has a depth input {by_role['depth'][0]!r}; use kind 'rgbd-saliency'")

    rgb_name, rgb = by_role["rgb"]
    rgb_tensor = _graph_input(graph, rgb_name)
    rgb_layout = _choice(rgb, "layout", LAYOUTS, "NCHW", f"inputs.{rgb_name}")
    _check_float(rgb_tensor, f"inputs.{rgb_name}")
    dims = _image_axes(rgb_tensor, rgb_layout, (3,), rgb_name, f"inputs.{rgb_name}")
    card_size = _size(rgb["size"], "size", f"inputs.{rgb_name}") if "size" in rgb else None
    size = _fit_size(card_size, dims, rgb_tensor, f"inputs.{rgb_name}")
    tensors = [(rgb_tensor, rgb_layout, "rgb", dims)]
    depth_table, depth_where = None, ""
    if "depth" in by_role:
        depth_name, depth_table = by_role["depth"]
        depth_where = f"inputs.{depth_name}"
        depth_tensor = _graph_input(graph, depth_name)
        depth_layout = _choice(depth_table, "layout", LAYOUTS, "NCHW", f"inputs.{depth_name}")
        _check_float(depth_tensor, f"inputs.{depth_name}")
        depth_dims = _image_axes(depth_tensor, depth_layout, (1, 3), depth_name, f"inputs.{depth_name}")
        if "size" in depth_table and _size(depth_table["size"], "size", f"inputs.{depth_name}") != tuple(size):
            raise CardError(
                f"card input {depth_name!r} size {depth_table['size']} differs from {rgb_name!r} size {list(size)}; "
                "edge-mm resizes colour and depth to one size"
            )
        _fit_size(tuple(size), depth_dims, depth_tensor, f"inputs.{depth_name}")
        tensors.append((depth_tensor, depth_layout, "depth", depth_dims))
    pre = _rgbd_preprocess(rgb, depth_table, tuple(size), f"inputs.{rgb_name}", depth_where)

    out_tensor, post, out_layout = _saliency_output(card, graph)
    batch = _batch_axis(rgb_tensor, f"inputs.{rgb_name}", dynamic_needed=False)
    profile: Dict[str, List[int]] = {"batch": list(batch)}
    min_size = _size(rgb["min_size"], "min_size", f"inputs.{rgb_name}") if "min_size" in rgb else tuple(size)
    max_size = _size(rgb["max_size"], "max_size", f"inputs.{rgb_name}") if "max_size" in rgb else tuple(size)
    for axis, label in enumerate(("height", "width")):
        if not min_size[axis] <= size[axis] <= max_size[axis]:
            raise CardError(
                f"card [inputs.{rgb_name}] {label}s must satisfy min_size <= size <= max_size, got "
                f"{min_size[axis]} <= {size[axis]} <= {max_size[axis]}"
            )
        profile[label] = [min_size[axis], size[axis], max_size[axis]]
    spec_inputs = [
        TensorSpec(t.name, "float32", _named_image_shape(t, layout, role), layout, role)
        for t, layout, role, _ in tensors
    ]
    spec_outputs = [TensorSpec(out_tensor.name, out_tensor.dtype, _named_map_shape(out_tensor, out_layout), out_layout)]
    spec_outputs += _other_outputs(graph, out_tensor.name)
    return ModelSpec(
        kind=kind,
        name=name,
        inputs=spec_inputs,
        outputs=spec_outputs,
        preprocess=pre.to_dict(),
        postprocess=post,
        profile=profile,
    )


def _other_outputs(graph: GraphInfo, chosen: str) -> List[TensorSpec]:
    """The graph's outputs besides the chosen one, after it: a TensorRT engine has them all, and the
    runtime checks an engine's tensor names against the spec; nothing reads them."""
    return [
        TensorSpec(t.name, t.dtype, [d if isinstance(d, int) else f"{t.name}_{i}" for i, d in enumerate(t.shape)])
        for t in graph.outputs
        if t.name != chosen
    ]


def _named_image_shape(tensor: TensorInfo, layout: str, role: str) -> List[Union[int, str]]:
    """The spec's shape: fixed axes as ints, dynamic ones named batch/height/width (the engine profile's names)."""
    names = ("batch", "channels", "height", "width") if layout == "NCHW" else ("batch", "height", "width", "channels")
    return [d if isinstance(d, int) else names[i] for i, d in enumerate(tensor.shape)]


def _named_map_shape(tensor: TensorInfo, layout: str) -> List[Union[int, str]]:
    names = {
        "NCHW": ("batch", "channels", "out_height", "out_width"),
        "NHWC": ("batch", "out_height", "out_width", "channels"),
    }
    axes = names.get(layout, ("batch", "out_height", "out_width"))
    return [d if isinstance(d, int) else axes[i] for i, d in enumerate(tensor.shape)]


# ---- CLIP-like cards ----------------------------------------------------------------------------


def _embedding_output(section: Dict[str, Any], graph: GraphInfo, where: str) -> Tuple[TensorInfo, bool]:
    table = _table(section, "output", f"{where}.output")
    _unknown(table, _EMBEDDING_OUTPUT_KEYS, f"{where}.output")
    tensor = _graph_output(graph, table.get("name"))
    if len(tensor.shape) != 2 or not isinstance(tensor.shape[1], int):
        raise CardError(
            f"graph output {tensor.describe()} cannot be an embedding: edge-mm needs [N, D] with a fixed D ([{where}.output])"
        )
    return tensor, _bool(table, "normalized", False, f"{where}.output")


def clip_image_spec(section: Dict[str, Any], graph: GraphInfo, name: str) -> ModelSpec:
    from edge_mm.clip.preprocess import OPENAI_MEAN, OPENAI_STD, ClipPreprocess

    inputs = _card_inputs(section, graph, "image.")
    if len(inputs) != 1:
        raise CardError(
            f"card [image.inputs] must name exactly one input; the graph's inputs are {graph.describe_inputs()}"
        )
    ((input_name, table),) = inputs.items()
    where = f"image.inputs.{input_name}"
    _choice(table, "role", ("rgb",), None, where)
    _unknown(table, _ROLE_KEYS["rgb"], where)
    tensor = _graph_input(graph, input_name)
    _check_float(tensor, where)
    # The CLIP preprocessing (edge_mm.clip.preprocess) gives NCHW RGB in 0-1 before mean/std, as every
    # CLIP-like tower trained on torchvision transforms expects; other conventions are refused, not guessed.
    _choice(table, "layout", ("NCHW",), "NCHW", where)
    _choice(table, "colour_order", ("rgb",), "rgb", where)
    _choice(table, "scaling", ("0-1",), "0-1", where)
    _choice(table, "resize", ("bicubic",), "bicubic", where)
    _choice(table, "crop", ("center",), "center", where)
    dims = _image_axes(tensor, "NCHW", (3,), input_name, where)
    size = _fit_size(_size(table["size"], "size", where) if "size" in table else None, dims, tensor, where)
    if size[0] != size[1]:
        raise CardError(f"card [{where}] size {list(size)} must be square: CLIP preprocessing centre-crops a square")
    batch = _batch_axis(tensor, where, dynamic_needed=True)
    pre = ClipPreprocess(
        image_size=size[0],
        mean=_numbers(table, "mean", 3, OPENAI_MEAN, where),
        std=_numbers(table, "std", 3, OPENAI_STD, where),
    )
    if min(pre.std) <= 0:
        raise CardError(f"card [{where}] std values must be positive")
    output, normalized = _embedding_output(section, graph, "image")
    return ModelSpec(
        kind="clip-image",
        name=name,
        inputs=[TensorSpec(tensor.name, "float32", ["batch", 3, size[0], size[1]], "NCHW", "rgb")],
        outputs=[TensorSpec(output.name, output.dtype, ["batch", output.shape[1]], "NC")]
        + _other_outputs(graph, output.name),
        preprocess=pre.to_dict(),
        postprocess={"l2_normalized": normalized},
        profile={"batch": list(batch)},
        extra={"embed_dim": int(output.shape[1])},
    )


def clip_text_spec(section: Dict[str, Any], graph: GraphInfo, name: str) -> ModelSpec:
    inputs = _card_inputs(section, graph, "text.")
    if len(inputs) != 1:
        raise CardError(
            f"card [text.inputs] must name exactly one input; the graph's inputs are {graph.describe_inputs()}"
        )
    ((input_name, table),) = inputs.items()
    where = f"text.inputs.{input_name}"
    _choice(table, "role", ("ids",), None, where)
    _unknown(table, _ROLE_KEYS["ids"], where)
    tensor = _graph_input(graph, input_name)
    tokenizer = _choice(table, "tokenizer", TOKENIZERS, "clip-bpe", where)
    eot = _choice(table, "eot", EOT_MODES, "argmax", where)
    pad_id = table.get("pad_id", 0)
    if pad_id != 0:
        raise CardError(f"card [{where}] pad_id = {pad_id!r}: the built-in CLIP tokenizer pads with 0")
    if tensor.dtype not in ("int64", "int32"):
        raise CardError(
            f"the graph's {tensor.describe()} is {tensor.dtype}; token ids must be int64 or int32 ([{where}])"
        )
    if len(tensor.shape) != 2:
        raise CardError(
            f"the graph's {tensor.describe()} has rank {len(tensor.shape)}; token ids are [N, context_length]"
        )
    context = table.get("context_length", tensor.shape[1])
    if not isinstance(context, int) or context < 2:
        raise CardError(f"card [{where}] context_length = {context!r} must be an int >= 2 (the graph's is dynamic)")
    if isinstance(tensor.shape[1], int) and tensor.shape[1] != context:
        raise CardError(
            f"card [{where}] context_length {context} does not fit the graph's {tensor.describe()} (fixed {tensor.shape[1]})"
        )
    batch = _batch_axis(tensor, where, dynamic_needed=True)
    output, normalized = _embedding_output(section, graph, "text")
    return ModelSpec(
        kind="clip-text",
        name=name,
        inputs=[TensorSpec(tensor.name, tensor.dtype, ["batch", context], "NT", "ids")],
        outputs=[TensorSpec(output.name, output.dtype, ["batch", output.shape[1]], "NC")]
        + _other_outputs(graph, output.name),
        # Same keys as edge-mm's own CLIP text spec (edge_mm.registry.clip_text_spec), plus the EOT rule.
        preprocess={"tokenizer": TOKENIZER_IDS[tokenizer], "context_length": context, "eot": eot},
        postprocess={"l2_normalized": normalized},
        profile={"batch": list(batch)},
        extra={"embed_dim": int(output.shape[1])},
    )


# ---- one entry point --------------------------------------------------------------------------------


def card_kind(card: Dict[str, Any]) -> str:
    if card.get("format", CARD_FORMAT) != CARD_FORMAT:
        raise CardError(f"card format {card.get('format')!r} is not supported; this edge-mm reads format {CARD_FORMAT}")
    return _choice(card, "kind", CARD_KINDS, None, ROOT)


def card_name(card: Dict[str, Any], default: str) -> str:
    name = card.get("name", default)
    if not isinstance(name, str) or not name.strip():
        raise CardError(f"card name = {name!r} must be a non-empty string")
    return name


def check_root(card: Dict[str, Any]) -> None:
    kind = card_kind(card)
    known = {"format", "kind", "name", "description"} | ({"image", "text"} if kind == "clip" else {"inputs", "output"})
    _unknown(card, known, ROOT)


def saliency_spec_from_card(card: Dict[str, Any], graph: GraphInfo, default_name: str, int8: bool = True) -> ModelSpec:
    check_root(card)
    kind = card_kind(card)
    if kind not in SALIENCY_CARD_KINDS:
        raise CardError(f"card kind {kind!r} takes --image and --text graphs, not one MODEL.onnx")
    check_opset(graph, int8)
    return saliency_spec(card, graph, card_name(card, default_name))


def clip_specs_from_card(
    card: Dict[str, Any], image: GraphInfo, text: GraphInfo, default_name: str, int8: bool = True
) -> Tuple[ModelSpec, ModelSpec]:
    check_root(card)
    kind = card_kind(card)
    if kind != "clip":
        raise CardError(f"card kind {kind!r} takes one MODEL.onnx, not --image and --text")
    for graph in (image, text):
        check_opset(graph, int8)
    name = card_name(card, default_name)
    image_spec = clip_image_spec(_table(card, "image", "image"), image, name)
    text_spec = clip_text_spec(_table(card, "text", "text"), text, name)
    if image_spec.extra["embed_dim"] != text_spec.extra["embed_dim"]:
        raise CardError(
            f"the image graph embeds to {image_spec.extra['embed_dim']} dims ({image_spec.outputs[0].name}) but the text "
            f"graph to {text_spec.extra['embed_dim']} ({text_spec.outputs[0].name}); they must share one space"
        )
    return image_spec, text_spec
