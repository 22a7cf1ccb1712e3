"""Build a TensorRT engine from an ONNX file, or reuse the one already built from the same inputs.

This is the runtime's builder (the engine is built where it runs): `edge-mm-engine build`,
`edge-mm-run`'s first-run build and `python -m export.build_engine` all call it. It never imports
torch; it reads ONNX graphs with the `onnx` package (imported lazily, torch-free) to check that the
file matches the precision, and the artifact contract (edge_mm.artifact) names files and writes sidecars.

One builder for every flavour (see flavours.py); features are picked by what the installed version
has, never copied per flavour:

- strongly typed networks where the version supports them (TensorRT >= 10.12, 11.x, TensorRT-RTX):
  precision is what the ONNX says (model.fp16.onnx has fp16 casts, model.int8.onnx has Q/DQ);
- TensorRT 10.0-10.11: weakly typed, FP16/INT8 builder flags, and the legacy entropy calibrator
  only when calibration data is passed;
- TensorRT-RTX: the builder config's target compute capabilities (ahead of time, no GPU needed);
  no timing cache (RTX compiles kernels at load time and caches them in a runtime cache instead);
- no Python bindings but trtexec (JetPack): the same settings as trtexec flags (trtexec.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from edge_mm.artifact import PRECISIONS, VARIANT_FILES, engine_filename, sidecar_path, spec_of_model, variant_path
from edge_mm.artifact import sidecar as sidecar_mod
from edge_mm.artifact.layout import calibration_cache_name, timing_cache_name
from edge_mm.atomic import atomic_path
from edge_mm.errors import EngineError
from edge_mm.hashing import sha256_file
from runtime.backends.trt import cuda
from runtime.backends.trt.calibrator import CalibrationBatches, make_entropy_calibrator
from runtime.backends.trt.flavours import Flavour, find_flavour
from runtime.backends.trt.logger import log, make_logger, one_line
from runtime.backends.trt.profile import (
    OnnxInput,
    ProfileShapes,
    narrow_ranges,
    onnx_inputs,
    read_onnx,
    resolve_profile,
)
from runtime.backends.trt.progress import make_progress_monitor
from runtime.backends.trt.trtexec import run_trtexec, trtexec_command

# Builder failures that a smaller profile can fix: memory, or no tactic fitting the workspace.
OUT_OF_MEMORY = ("outofmemory", "out of memory", "within workspace limit")
QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}
FLOAT16 = 10  # onnx.TensorProto.FLOAT16


@dataclasses.dataclass
class BuildOutcome:
    engine_path: Path
    sidecar: Dict[str, Any]
    reused: bool
    reason: str  # why it was (re)built, or why it was reused
    seconds: float


def artifact_onnx(artifact_dir: Union[str, Path], precision: str, calibrate: bool = False) -> Path:
    """The ONNX file that TensorRT compiles for `precision` (model.onnx when calibrating on TensorRT 10)."""
    check_precision(precision)
    return variant_path(artifact_dir, "fp32" if calibrate else precision)


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise EngineError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")


def normalize_targets(target_sm: Union[None, int, str, Sequence[Union[int, str]]]) -> List[int]:
    """86, '86', 'sm86', '8.6' or a list of them -> [86, ...]."""
    if target_sm is None:
        return []
    items = [target_sm] if isinstance(target_sm, (int, str)) else list(target_sm)
    targets = []
    for item in items:
        text = str(item).lower().removeprefix("sm").strip()
        try:
            sm = int(round(float(text) * 10)) if "." in text else int(text)
        except ValueError:
            raise EngineError(f"target_sm {item!r} is not a compute capability; use e.g. 86, 'sm86' or '8.6'") from None
        targets.append(sm)
    return sorted(set(targets))


# -- ONNX checks -----------------------------------------------------------------------------------


def onnx_precision_facts(model: Any) -> Tuple[bool, bool]:
    """(has Q/DQ nodes, has float16 tensors) of an ONNX graph."""
    graph = model.graph
    has_qdq = any(node.op_type in QDQ_OPS for node in graph.node)
    has_fp16 = any(init.data_type == FLOAT16 for init in graph.initializer)
    has_fp16 = has_fp16 or any(
        node.op_type == "Cast" and any(a.name == "to" and a.i == FLOAT16 for a in node.attribute) for node in graph.node
    )
    has_fp16 = has_fp16 or any(
        v.type.tensor_type.elem_type == FLOAT16 for v in list(graph.value_info) + list(graph.input) + list(graph.output)
    )
    return has_qdq, has_fp16


def check_onnx_matches_precision(
    model: Any, onnx_path: Path, precision: str, strongly_typed: bool, calibrating: bool
) -> None:
    """Catch the wrong ONNX for a precision before a long build silently produces fp32."""
    has_qdq, has_fp16 = onnx_precision_facts(model)
    name = Path(onnx_path).name
    if precision == "int8":
        if calibrating and has_qdq:
            raise EngineError(
                f"{name} already has Q/DQ nodes; calibrate from model.onnx (fp32) or build "
                f"{name} without calibration data"
            )
        if not calibrating and not has_qdq:
            raise EngineError(
                f"{name} has no QuantizeLinear/DequantizeLinear nodes, so it cannot give an INT8 engine; "
                "build from model.int8.onnx (or calibrate model.onnx on TensorRT 10)"
            )
        return
    if has_qdq:
        raise EngineError(
            f"{name} is quantized (Q/DQ nodes); build it with precision int8, "
            f"or build {precision} from {VARIANT_FILES[precision]}"
        )
    if strongly_typed and precision == "fp16" and not has_fp16:
        raise EngineError(
            f"{name} has no float16 tensors and this TensorRT is strongly typed, so the engine would be "
            "fp32; build fp16 from model.fp16.onnx"
        )
    if strongly_typed and precision == "fp32" and has_fp16:
        raise EngineError(f"{name} has float16 tensors; build it with precision fp16, or fp32 from model.onnx")


def onnx_digest(model: Any, onnx_path: Path) -> str:
    """sha256 of the ONNX file, folded with its external-data files' hashes when it has any."""
    digest = sha256_file(onnx_path)
    locations = sorted(
        {
            entry.value
            for init in model.graph.initializer
            if init.data_location == 1  # TensorProto.EXTERNAL
            for entry in init.external_data
            if entry.key == "location"
        }
    )
    if not locations:
        return digest
    combined = hashlib.sha256(digest.encode())
    for location in locations:
        path = onnx_path.parent / location
        if not path.is_file():
            raise EngineError(
                f"{onnx_path.name} keeps weights in {location}, which is missing; copy it beside the ONNX"
            )
        combined.update(f"{location}:{sha256_file(path)}".encode())
    return combined.hexdigest()


def onnx_io(model: Any, shapes: Mapping[str, ProfileShapes]) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]]]:
    """I/O description from the ONNX graph (used where no TensorRT network is at hand: trtexec)."""
    from onnx import helper

    def describe(value: Any) -> Dict[str, Any]:
        tensor = value.type.tensor_type
        dims = [int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in tensor.shape.dim]
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type)).name
        return {"name": value.name, "dtype": dtype, "shape": dims}

    initializers = {init.name for init in model.graph.initializer}
    inputs = [
        dict(describe(v), profile=shapes[v.name].to_dict()) for v in model.graph.input if v.name not in initializers
    ]
    return inputs, [describe(v) for v in model.graph.output]


# -- targets ---------------------------------------------------------------------------------------


def resolve_targets(
    flavour: Flavour, target_sm: Any, dla_core: Optional[int]
) -> Tuple[List[int], Optional[Dict[str, Any]]]:
    """(compute capabilities the engine is for, build GPU description or None)."""
    requested = normalize_targets(target_sm)
    gpu = None
    if cuda.device_count() > 0:
        info = cuda.device_info(0)
        gpu = {"name": info.name, "compute_capability": info.compute_capability}
    if flavour.targets_compute_capabilities:
        if dla_core is not None:
            raise EngineError("TensorRT-RTX has no DLA support; drop dla_core or build with TensorRT on Jetson")
        if requested:
            return requested, gpu
        if gpu is None:
            raise EngineError(
                "no CUDA GPU here to build for; TensorRT-RTX can build ahead of time: pass "
                "target_sm (e.g. 86 for RTX 30xx, 89 for RTX 40xx, 120 for RTX 50xx)"
            )
        return [info.sm], gpu
    if gpu is None:
        raise EngineError(
            "TensorRT builds an engine on the GPU it will run on, and no CUDA GPU is visible here "
            "(check nvidia-smi and that cuda-python is installed: pip install 'edge-mm[trt]')"
        )
    if requested and requested != [info.sm]:
        raise EngineError(
            f"TensorRT builds for the GPU it runs on (sm{info.sm}, {info.name}); build on the sm"
            f"{'/'.join(map(str, requested))} device instead, or drop target_sm"
        )
    return [info.sm], gpu


# -- building with the Python bindings ---------------------------------------------------------


def parser_error(parser: Any, onnx_path: Path) -> EngineError:
    """One line naming the first ONNX node TensorRT could not parse, and why."""
    details = []
    for i in range(parser.num_errors):
        error = parser.get_error(i)
        node = error.node_name() or f"#{error.node()}"
        op = error.node_operator()
        details.append(f"node {node!r}" + (f" ({op})" if op else "") + f": {one_line(error.desc(), 240)}")
    first = details[0] if details else "no details from the parser"
    more = f" (+{len(details) - 1} more)" if len(details) > 1 else ""
    return EngineError(
        f"TensorRT cannot parse {Path(onnx_path).name}: {first}{more}; change or re-export that part of the model"
    )


def dtype_name(trt: Any, dtype: Any) -> str:
    try:
        return np.dtype(trt.nptype(dtype)).name
    except TypeError:  # bf16, fp8, int4 have no numpy type
        return str(dtype).split(".")[-1].lower()


def build_with_bindings(
    flavour: Flavour,
    onnx_path: Path,
    precision: str,
    shapes: Mapping[str, ProfileShapes],
    targets: Sequence[int],
    *,
    workspace_mib: int,
    optimization_level: Optional[int],
    dla_core: Optional[int],
    gpu_fallback: bool,
    timing_cache: Optional[Path],
    calibration: Optional[CalibrationBatches],
    calibration_cache: Optional[Path],
    progress: bool,
) -> Tuple[Any, List[Dict[str, Any]], List[Dict[str, Any]]]:
    """Parse, configure and build; returns (serialized plan, inputs, outputs)."""
    trt = flavour.module
    logger = make_logger(trt)
    logger.errors.clear()
    builder = trt.Builder(logger)
    strongly_typed = flavour.strongly_typed and calibration is None
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        raise parser_error(parser, onnx_path)

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mib) << 20)
    if optimization_level is not None:
        config.builder_optimization_level = int(optimization_level)
    if not strongly_typed and precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
        if precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)  # Q/DQ graph, or the calibrator below
    if flavour.targets_compute_capabilities:
        set_compute_capabilities(trt, config, targets, flavour)
    if dla_core is not None:
        if dla_core >= builder.num_DLA_cores:
            raise EngineError(
                f"DLA core {dla_core} does not exist here ({builder.num_DLA_cores} DLA cores); "
                "use 0 or 1 on Jetson AGX Orin / Orin NX, or drop dla_core"
            )
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(dla_core)
        if gpu_fallback:
            config.set_flag(trt.BuilderFlag.GPU_FALLBACK)

    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    unknown = [t.name for t in inputs if t.name not in shapes]
    if unknown:
        raise EngineError(f"network inputs {unknown} have no profile shapes; re-export the ONNX")
    dynamic = [t for t in inputs if any(d < 0 for d in t.shape)]
    if dynamic:
        profile = builder.create_optimization_profile()
        for tensor in dynamic:
            s = shapes[tensor.name]
            profile.set_shape(tensor.name, s.min, s.opt, s.max)
        if config.add_optimization_profile(profile) < 0:
            raise EngineError(
                f"TensorRT rejected the optimization profile {dict((n, s.to_dict()) for n, s in shapes.items())}: "
                f"{logger.first_error()}; fix the spec's profile ranges"
            )

    calibrator = None
    if calibration is not None:
        calibrator = attach_calibrator(trt, builder, config, calibration, calibration_cache, dynamic)

    cache = None
    if timing_cache is not None:
        # Reuse tactic timings from earlier builds on this GPU + TensorRT (minutes saved on Jetson).
        blob = timing_cache.read_bytes() if timing_cache.is_file() else b""
        cache = config.create_timing_cache(blob)
        if cache is None or not config.set_timing_cache(cache, False):
            log.warning("timing cache %s does not fit this GPU/TensorRT; starting a new one", timing_cache.name)
            cache = config.create_timing_cache(b"")
            config.set_timing_cache(cache, False)

    monitor = None
    if hasattr(trt, "IProgressMonitor"):
        monitor = make_progress_monitor(trt, enabled=progress)
        config.progress_monitor = monitor  # keep `monitor` referenced until the build returns

    try:
        plan = builder.build_serialized_network(network, config)
    finally:
        if calibrator is not None:
            calibrator.release()
    if plan is None:
        raise EngineError(
            f"TensorRT could not build {Path(onnx_path).name}: {logger.first_error()}; "
            "see the log above (a larger workspace or a simpler profile may help)"
        )
    if cache is not None:
        with atomic_path(timing_cache) as tmp:
            tmp.write_bytes(bytes(config.get_timing_cache().serialize()))
    del monitor

    input_io = [
        {"name": t.name, "dtype": dtype_name(trt, t.dtype), "shape": list(t.shape), "profile": shapes[t.name].to_dict()}
        for t in inputs
    ]
    outputs = [network.get_output(i) for i in range(network.num_outputs)]
    output_io = [{"name": t.name, "dtype": dtype_name(trt, t.dtype), "shape": list(t.shape)} for t in outputs]
    return plan, input_io, output_io


def set_compute_capabilities(trt: Any, config: Any, targets: Sequence[int], flavour: Flavour) -> None:
    supported = sorted(name for name in trt.ComputeCapability.__members__ if name.startswith("SM"))
    config.num_compute_capabilities = len(targets)
    for index, sm in enumerate(targets):
        capability = getattr(trt.ComputeCapability, f"SM{sm}", None)
        if capability is None or not config.set_compute_capability(capability, index):
            raise EngineError(
                f"TensorRT-RTX {flavour.version_string} cannot target sm{sm}; it supports "
                f"{', '.join(s.lower() for s in supported)}"
            )


def attach_calibrator(
    trt: Any,
    builder: Any,
    config: Any,
    calibration: CalibrationBatches,
    cache_path: Optional[Path],
    dynamic: Sequence[Any],
) -> Any:
    """Legacy INT8 calibration (TensorRT 10.x): one profile point, the shape of the first batch."""
    calibrator = make_entropy_calibrator(trt, calibration, cache_path)
    cached = cache_path is not None and cache_path.is_file()
    if dynamic and not cached:  # with a cache TensorRT reads the ranges and runs no batches
        first = calibration.peek_shapes()
        profile = builder.create_optimization_profile()
        for tensor in dynamic:
            shape = first[tensor.name]
            profile.set_shape(tensor.name, shape, shape, shape)
        config.set_calibration_profile(profile)
    config.int8_calibrator = calibrator
    return calibrator


# -- the entry point ---------------------------------------------------------------------------


def build_engine(
    onnx_path: Union[str, Path],
    precision: str,
    out_dir: Union[None, str, Path] = None,
    flavour: Optional[str] = None,
    target_sm: Any = None,
    **options: Any,
) -> Path:
    """Build (or reuse) the engine for `onnx_path` at `precision`; returns the engine's path.

    See `build_or_reuse` for the options.
    """
    return build_or_reuse(onnx_path, precision, out_dir, flavour, target_sm, **options).engine_path


def build_or_reuse(
    onnx_path: Union[str, Path],
    precision: str,
    out_dir: Union[None, str, Path] = None,
    flavour: Optional[str] = None,
    target_sm: Any = None,
    *,
    profile: Optional[Mapping[str, Sequence[int]]] = None,
    workspace_mib: int = 1024,
    optimization_level: Optional[int] = None,
    dla_core: Optional[int] = None,
    gpu_fallback: bool = True,
    timing_cache_dir: Union[None, str, Path] = None,
    calibration_data: Optional[Iterable[Mapping[str, np.ndarray]]] = None,
    calibration_cache: Union[None, str, Path] = None,
    force: bool = False,
    progress: bool = True,
) -> BuildOutcome:
    """Build `model.<precision>.<flavour><version>.sm<CC>[.dla<N>].engine` + sidecar in `out_dir`.

    onnx_path: the ONNX to compile (`artifact_onnx` picks it for an artifact folder).
    precision: fp32 | fp16 | int8 (must match the ONNX where TensorRT is strongly typed).
    out_dir: where the engine goes (default: beside the ONNX).
    flavour: None (best available) | 'tensorrt' | 'tensorrt_rtx' | 'trtexec'.
    target_sm: TensorRT-RTX ahead-of-time targets (86, [86, 89], 'sm120'); TensorRT builds for its GPU.
    profile: {axis name: [min, opt, max]} overriding the spec's profile (see profile.py).
    workspace_mib, optimization_level (0-5): builder settings; dla_core (+gpu_fallback): Jetson DLA.
    timing_cache_dir: where timing.<flavour><ver>.sm<CC>.cache lives (default out_dir; not for RTX).
    calibration_data: batches {input: array} for the legacy INT8 calibrator (TensorRT 10.x, int8, fp32 ONNX);
    calibration_cache: its cache file (default calib.<model>.<flavour><ver>.sm<CC>.cache in out_dir).
    force: rebuild even if the sidecar says nothing changed.

    A build that runs out of memory (or finds no tactic within the workspace) is retried once with
    every profile axis capped at its opt value (the native size, the runtime's batch); both profiles
    are printed and the sidecar records the one used (`build_options.narrowed_profile_after_out_of_memory`,
    and the spec's profile). The rebuild key keeps the asked profile, so the next call reuses the engine.
    """
    start = time.perf_counter()
    check_precision(precision)
    onnx_path = Path(onnx_path)
    out_dir = Path(out_dir) if out_dir is not None else onnx_path.parent
    flav = find_flavour(flavour)
    say = print if progress else log.info

    model = read_onnx(onnx_path)
    spec = spec_of_model(model)
    inputs: List[OnnxInput] = onnx_inputs(model)
    ranges: Dict[str, Sequence[int]] = {**((spec.profile if spec else None) or {}), **(profile or {})}
    shapes = resolve_profile(inputs, ranges)
    calibrating = calibration_data is not None
    if calibrating and (precision != "int8" or not flav.has_legacy_calibrator):
        raise EngineError(
            "calibration data is only used for int8 with the TensorRT 10.x Python bindings "
            f"(here: {precision}, {flav.name} {flav.version_string} via {flav.tool}); build model.int8.onnx instead"
        )
    strongly_typed = flav.strongly_typed and not calibrating
    check_onnx_matches_precision(model, onnx_path, precision, strongly_typed, calibrating)
    onnx_sha256 = onnx_digest(model, onnx_path)
    del model  # only metadata was needed; the builder reads the file itself

    targets, gpu = resolve_targets(flav, target_sm, dla_core)
    engine_path = out_dir / engine_filename(onnx_path, precision, flav.tag, targets, dla_core)
    build_options = {
        "workspace_mib": int(workspace_mib),
        "optimization_level": optimization_level,
        "strongly_typed": strongly_typed,
        "calibration": "entropy2" if calibrating else None,
        "gpu_fallback": bool(gpu_fallback) if dla_core is not None else None,
    }
    key = sidecar_mod.make_key(
        onnx_sha256=onnx_sha256,
        flavour=flav.name,
        version=flav.version_string,
        precision=precision,
        targets=targets,
        dla_core=dla_core,
        profile={n: s.to_dict() for n, s in shapes.items()},
        options=build_options,
    )
    reason = "forced" if force else sidecar_mod.rebuild_reason(engine_path, key)
    if reason is None:
        say(f"reusing {engine_path.name}: ONNX, TensorRT version, precision, targets, profile and options unchanged")
        data = sidecar_mod.read_engine_sidecar(sidecar_path(engine_path))
        return BuildOutcome(engine_path, data, True, "unchanged", time.perf_counter() - start)

    say(f"building {engine_path.name} with {flav.name} {flav.version_string} ({flav.tool}; {reason})")
    timing_cache = None
    if flav.has_timing_cache:
        timing_cache = Path(timing_cache_dir or out_dir) / timing_cache_name(flav.tag, targets)
        timing_cache.parent.mkdir(parents=True, exist_ok=True)
    calib_cache = None
    if calibrating:
        calib_cache = (
            Path(calibration_cache)
            if calibration_cache
            else out_dir / calibration_cache_name(onnx_path, flav.tag, targets)
        )

    out_dir.mkdir(parents=True, exist_ok=True)
    build_start = time.perf_counter()
    with atomic_path(engine_path) as tmp:
        if flav.trtexec is not None:
            cmd = trtexec_command(
                flav.trtexec,
                onnx_path,
                tmp,
                precision=precision,
                strongly_typed=strongly_typed,
                shapes={t.name: shapes[t.name] for t in inputs if any(isinstance(d, str) for d in t.dims)},
                workspace_mib=workspace_mib,
                timing_cache=timing_cache,
                optimization_level=optimization_level,
                dla_core=dla_core,
                gpu_fallback=gpu_fallback,
            )
            say(" ".join(cmd))
            run_trtexec(cmd, engine_path.with_name(engine_path.name + ".log"))
            input_io, output_io = onnx_io(read_onnx(onnx_path), shapes)
        else:
            batches = None
            if calibrating:
                dtypes = {t.name: _onnx_np_dtype(t.elem_type) for t in inputs}
                batches = CalibrationBatches(calibration_data, dtypes)  # type: ignore[arg-type]
            settings = dict(
                workspace_mib=workspace_mib,
                optimization_level=optimization_level,
                dla_core=dla_core,
                gpu_fallback=gpu_fallback,
                timing_cache=timing_cache,
                calibration=batches,
                calibration_cache=calib_cache,
                progress=progress,
            )
            try:
                plan, input_io, output_io = build_with_bindings(flav, onnx_path, precision, shapes, targets, **settings)
            except EngineError as exc:
                narrowed = narrow_ranges(ranges)
                if not is_out_of_memory(exc) or narrowed == ranges or calibrating:
                    raise
                # A profile up to the native size and batch needs far less builder memory.
                say(
                    f"out of memory with profile {describe_ranges(ranges)}; retrying once with "
                    f"{describe_ranges(narrowed)}"
                )
                shapes = resolve_profile(inputs, narrowed)
                plan, input_io, output_io = build_with_bindings(flav, onnx_path, precision, shapes, targets, **settings)
                build_options["narrowed_profile_after_out_of_memory"] = {a: list(v) for a, v in narrowed.items()}
                if spec is not None:
                    spec = dataclasses.replace(spec, profile={a: list(v) for a, v in narrowed.items()})
            with open(tmp, "wb") as fh:
                fh.write(plan)
    seconds = time.perf_counter() - build_start
    if flav.is_rtx:
        build_options["runtime_cache"] = engine_path.name + ".runtime-cache"
    data = sidecar_mod.write_engine_sidecar(
        engine_path,
        key=key,
        tool=flav.tool,
        gpu=gpu,
        onnx_path=onnx_path,
        inputs=input_io,
        outputs=output_io,
        build_options=build_options,
        spec=spec.to_dict() if spec else None,
        build_seconds=seconds,
    )
    say(f"wrote {engine_path} ({engine_path.stat().st_size / 2**20:.1f} MiB) in {seconds:.1f} s")
    return BuildOutcome(engine_path, data, False, reason, time.perf_counter() - start)


def is_out_of_memory(exc: BaseException) -> bool:
    text = str(exc).lower()
    return any(marker in text for marker in OUT_OF_MEMORY)


def describe_ranges(ranges: Mapping[str, Sequence[int]]) -> str:
    """{'batch': [1, 1, 8], 'height': [128, 256, 512]} -> 'batch 1..8 (opt 1), height 128..512 (opt 256)'."""
    return ", ".join(f"{axis} {v[0]}..{v[2]} (opt {v[1]})" for axis, v in sorted(ranges.items()))


def _onnx_np_dtype(elem_type: int) -> np.dtype:
    from onnx import helper

    return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type))
