"""Optimization-profile shapes for an engine, from the ONNX inputs and the artifact's spec.

Each ONNX input axis is either fixed (dim_value) or named (dim_param, e.g. "batch", "height",
"width"). A named axis takes its [min, opt, max] from `spec.profile[<axis name>]`, which a caller's
`profile` argument may override. So CDINet's rgb (batch,3,height,width) and depth
(batch,1,height,width) share one batch/height/width range, and CLIP's image (batch,3,224,224) and
text (batch,77) inputs need only "batch".
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

from edge_mm.artifact import export_command
from edge_mm.errors import EngineError

Shape = Tuple[int, ...]
AxisRange = Sequence[int]  # [min, opt, max]


@dataclasses.dataclass(frozen=True)
class OnnxInput:
    name: str
    elem_type: int  # onnx.TensorProto enum
    dims: Tuple[Union[int, str], ...]  # int for fixed axes, the dim_param name for dynamic ones


@dataclasses.dataclass(frozen=True)
class ProfileShapes:
    min: Shape
    opt: Shape
    max: Shape

    def to_dict(self) -> Dict[str, List[int]]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}


def read_onnx(path: Path):
    """Load an ONNX graph without its external weights (we only read inputs, metadata and node types)."""
    import onnx

    try:
        return onnx.load(str(path), load_external_data=False)
    except FileNotFoundError:
        raise EngineError(
            f"ONNX file {path} does not exist; export it with `{export_command(Path(path).parent)}`"
        ) from None
    except Exception as exc:  # onnx raises DecodeError and friends for corrupt files
        raise EngineError(f"{path} is not a readable ONNX file ({exc}); re-export it") from None


def onnx_inputs(model) -> List[OnnxInput]:
    initializers = {init.name for init in model.graph.initializer}
    inputs = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        dims: List[Union[int, str]] = []
        for axis, dim in enumerate(tensor.shape.dim):
            if dim.HasField("dim_value") and dim.dim_value > 0:
                dims.append(int(dim.dim_value))
            elif dim.HasField("dim_param") and dim.dim_param:
                dims.append(dim.dim_param)
            else:
                raise EngineError(
                    f"ONNX input {value.name!r} axis {axis} is dynamic without a name; "
                    "re-export with named dynamic axes (e.g. batch, height, width)"
                )
        inputs.append(OnnxInput(value.name, int(tensor.elem_type), tuple(dims)))
    return inputs


def check_axis_range(axis: str, values: AxisRange) -> Tuple[int, int, int]:
    try:
        lo, opt, hi = (int(v) for v in values)
    except (TypeError, ValueError):
        raise EngineError(f"profile for axis {axis!r} must be [min, opt, max] integers, got {values!r}") from None
    if not 1 <= lo <= opt <= hi:
        raise EngineError(f"profile for axis {axis!r} must satisfy 1 <= min <= opt <= max, got {[lo, opt, hi]}")
    return lo, opt, hi


def resolve_profile(
    inputs: Sequence[OnnxInput],
    spec_profile: Optional[Mapping[str, AxisRange]] = None,
    override: Optional[Mapping[str, AxisRange]] = None,
) -> Dict[str, ProfileShapes]:
    """min/opt/max shapes for every input. Axis ranges come from `override`, then `spec_profile`."""
    ranges: Dict[str, AxisRange] = {**(spec_profile or {}), **(override or {})}
    shapes: Dict[str, ProfileShapes] = {}
    for tensor in inputs:
        lo: List[int] = []
        opt: List[int] = []
        hi: List[int] = []
        for dim in tensor.dims:
            if isinstance(dim, int):
                lo.append(dim), opt.append(dim), hi.append(dim)
                continue
            if dim not in ranges:
                raise EngineError(
                    f"no optimization profile for axis {dim!r} of input {tensor.name!r}: the spec's profile has "
                    f"{sorted(ranges) or 'nothing'}; re-export with profile[{dim!r}] = [min, opt, max] or pass profile="
                )
            a, b, c = check_axis_range(dim, ranges[dim])
            lo.append(a), opt.append(b), hi.append(c)
        shapes[tensor.name] = ProfileShapes(tuple(lo), tuple(opt), tuple(hi))
    return shapes


def narrow_ranges(ranges: Mapping[str, AxisRange]) -> Dict[str, List[int]]:
    """Each axis capped at its opt value (the native size and the batch the runtime uses): [min, opt, opt]."""
    narrowed = {}
    for axis, values in ranges.items():
        lo, opt, _ = check_axis_range(axis, values)
        narrowed[axis] = [lo, opt, opt]
    return narrowed
