"""Engines for a whole artifact: can this machine build them, build every graph folder, first-run builds.

One place for what `edge-mm-engine build`, `python -m export.build_engine` (its engine stage) and
`edge-mm-run` (first run without a matching engine) share; each precision is one `build_or_reuse`.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence, Union

from edge_mm.artifact import VARIANT_FILES, graph_folders, variant_path
from edge_mm.errors import EngineError
from runtime.backends.trt import cuda
from runtime.backends.trt.builder import BuildOutcome, build_or_reuse
from runtime.backends.trt.flavours import Flavour, find_flavour


@dataclasses.dataclass
class EngineBuild:
    """One engine of an artifact: the graph folder, its precision and what the builder did."""

    folder: Path
    precision: str
    outcome: BuildOutcome


def gpu_count() -> int:
    try:
        return cuda.device_count()
    except Exception:  # no cuda-python or no driver: no GPU to build on
        return 0


@dataclasses.dataclass(frozen=True)
class BuilderHere:
    """What can build engines on this machine: `flavour`, or None with `reason` (`installed`: a TensorRT is)."""

    flavour: Optional[Flavour]
    installed: bool
    reason: str = ""


def builder_here(flavour: Optional[str] = None, target_sm: Any = None) -> BuilderHere:
    """The flavour that can build on this machine, or why none can.

    TensorRT builds on the GPU it will run on; TensorRT-RTX also builds ahead of time without a
    GPU when given target compute capabilities. A flavour asked for by name that is missing is an
    EngineError (the user named it); a missing default is only a reason.
    """
    try:
        found = find_flavour(flavour)
    except EngineError as exc:
        if flavour is not None:
            raise
        return BuilderHere(None, False, str(exc))
    described = f"{found.name} {found.version_string}"
    if gpu_count() == 0 and not (found.targets_compute_capabilities and target_sm):
        if found.targets_compute_capabilities:
            return BuilderHere(
                None,
                True,
                (
                    f"{described} is installed but there is no GPU here and no --target-sm; pass --target-sm "
                    "(86: RTX 30xx, 89: RTX 40xx, 120: RTX 50xx) to build ahead of time"
                ),
            )
        return BuilderHere(
            None,
            True,
            f"{described} is installed but no CUDA GPU is visible; TensorRT builds on the GPU it will run on",
        )
    return BuilderHere(found, True)


def build_artifact_engines(
    artifact_dir: Union[str, Path],
    precisions: Sequence[str],
    *,
    say: Callable[[str], None] = print,
    **options: Any,
) -> List[EngineBuild]:
    """Build (or reuse) one engine per graph folder and precision whose ONNX file is present.

    `options` go to build_or_reuse (flavour, target_sm, profile, workspace_mib, dla_core,
    timing_cache_dir, force, progress). Precisions without their ONNX file are skipped with a line.
    """
    builds = []
    progress = options.pop("progress", True)
    for folder in graph_folders(artifact_dir):
        for precision in precisions:
            onnx_path = variant_path(folder, precision)
            if not onnx_path.is_file():
                say(f"{folder}: no {VARIANT_FILES[precision]}, so no {precision} engine")
                continue
            outcome = build_or_reuse(onnx_path, precision, folder, progress=progress, **options)
            builds.append(EngineBuild(folder, precision, outcome))
    return builds


def build_on_first_run(
    artifact_dir: Union[str, Path],
    precision: str,
    *,
    flavour: Optional[str] = None,
    target_sm: Any = None,
    say: Callable[[str], None] = print,
) -> Optional[BuildOutcome]:
    """edge-mm-run without a matching engine: build one here if a TensorRT can, cache it beside the ONNX, say so.

    Returns None (after saying why) when nothing can build here; raises EngineError when a build fails.
    """
    here = builder_here(flavour, target_sm)
    if here.flavour is None:
        say(f"no {precision} engine built on first run: {here.reason}")
        return None
    found = here.flavour
    onnx_path = variant_path(artifact_dir, precision)
    if not onnx_path.is_file():
        say(f"no {precision} engine built on first run: the artifact has no {onnx_path.name}")
        return None
    say(f"building a {precision} TensorRT engine for this machine with {found.name} {found.version_string} (first run)")
    start = time.perf_counter()
    outcome = build_or_reuse(
        onnx_path, precision, onnx_path.parent, flavour=flavour, target_sm=target_sm, progress=True
    )
    seconds = time.perf_counter() - start
    verb = "reused" if outcome.reused else f"built in {seconds:.1f} s and cached"
    say(f"engine {outcome.engine_path.name} {verb} at {outcome.engine_path.parent} (later runs load it)")
    return outcome
