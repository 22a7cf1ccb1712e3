"""The ONNX Runtime backend: runs model.onnx, model.fp16.onnx or model.int8.onnx (torch- and onnx-free).

CPU everywhere; CUDA where onnxruntime-gpu is installed. The model spec comes from the ONNX file's
metadata (key `edge_mm`): read cheaply at construction so `input_specs` work before activation,
and checked against the session's own metadata when the session is created.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Optional, Union

import numpy as np

from edge_mm.artifact import Artifact, export_command, precision_of, read_onnx_spec
from edge_mm.errors import ArtifactError, BackendError
from edge_mm.spec import METADATA_KEY, ModelSpec
from runtime.backends.base import Backend

log = logging.getLogger("edge_mm.runtime.onnxruntime")

PROVIDER_CHOICES = ("auto", "cpu", "cuda")
CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
OPTIMIZATION_LEVELS = ("disabled", "basic", "extended", "all")


def _ort():
    try:
        import onnxruntime
    except ImportError:
        raise BackendError(
            "onnxruntime is not installed; pip install onnxruntime (or onnxruntime-gpu for CUDA)"
        ) from None
    return onnxruntime


def available_providers() -> List[str]:
    return list(_ort().get_available_providers())


def is_available() -> bool:
    try:
        _ort()
    except BackendError:
        return False
    return True


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class OnnxRuntimeBackend(Backend):
    """Runs an ONNX file with ONNX Runtime.

    providers: "auto" (CUDA if this onnxruntime has it, else CPU), "cpu" or "cuda" (an error if
    CUDA is missing). After activation `.provider` names the execution provider actually used.
    threads: intra-op threads (None: ONNX Runtime's default, one per physical core).
    optimization: ONNX Runtime graph optimization level, "all" by default.
    """

    name = "onnxruntime"

    def __init__(
        self,
        onnx_path: Union[str, Path],
        spec: Optional[ModelSpec] = None,
        providers: str = "auto",
        threads: Optional[int] = None,
        optimization: str = "all",
    ) -> None:
        if providers not in PROVIDER_CHOICES:
            raise BackendError(f"unknown onnxruntime providers {providers!r}; use one of {', '.join(PROVIDER_CHOICES)}")
        if optimization not in OPTIMIZATION_LEVELS:
            raise BackendError(
                f"unknown optimization level {optimization!r}; use one of {', '.join(OPTIMIZATION_LEVELS)}"
            )
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise BackendError(f"threads must be a positive integer or None, got {threads!r}")
        self.onnx_path = Path(onnx_path)
        self._spec_from_file = spec is None
        super().__init__(spec if spec is not None else read_onnx_spec(self.onnx_path), precision_of(self.onnx_path))
        self.providers = providers
        self.threads = threads
        self.optimization = optimization
        self.provider: Optional[str] = None
        self._session = None
        self._output_names: List[str] = []

    @classmethod
    def probe(cls, artifact: Union[Artifact, str, Path], providers: str = "cpu") -> List[str]:
        """Why ONNX Runtime with `providers` cannot run this artifact here; [] when it can."""
        artifact = artifact if isinstance(artifact, Artifact) else Artifact(artifact)
        reasons = []
        if not is_available():
            return ["onnxruntime is not installed (pip install onnxruntime)"]
        if providers == "cuda" and CUDA not in available_providers():
            reasons.append("this onnxruntime has no CUDAExecutionProvider (pip install onnxruntime-gpu)")
        if not artifact.variants():
            reasons.append(f"the artifact has no ONNX file ({export_command(artifact.path, artifact.model_name)})")
        return reasons

    @classmethod
    def from_artifact(
        cls, artifact: Union[Artifact, str, Path], precision: str, **options: object
    ) -> "OnnxRuntimeBackend":
        """The artifact's `precision` ONNX file on ONNX Runtime; options: providers, threads, optimization."""
        artifact = artifact if isinstance(artifact, Artifact) else Artifact(artifact)
        return cls(artifact.onnx_path(precision), **options)  # type: ignore[arg-type]

    def _wanted_providers(self) -> List[str]:
        have = available_providers()
        if self.providers == "cuda":
            if CUDA not in have:
                raise BackendError(
                    f"CUDAExecutionProvider is not in this onnxruntime (it has {', '.join(have)}); "
                    "pip install onnxruntime-gpu, or use providers='cpu'"
                )
            return [CUDA, CPU]
        if self.providers == "auto" and CUDA in have:
            return [CUDA, CPU]
        return [CPU]

    def activate_impl(self) -> None:
        ort = _ort()
        wanted = self._wanted_providers()
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: ORT's warnings would flood a camera loop's log
        options.graph_optimization_level = {
            "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[self.optimization]
        if self.threads is not None:
            options.intra_op_num_threads = self.threads
        # Idle worker threads spin by default. On a 2-6 core edge CPU shared with capture and
        # rendering threads, the spinning steals the cores they need: measured 8-9 FPS with
        # spinning vs 11-19 FPS without on the 2-core CI machine, for the model alone and the pipeline.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if not self.onnx_path.is_file():
            raise ArtifactError(f"no ONNX file at {self.onnx_path}; export it with `{self._rebuild()}`")
        try:
            session = ort.InferenceSession(str(self.onnx_path), options, providers=wanted)
        except Exception as exc:  # ORT raises InvalidProtobuf, Fail, NoSuchFile, ... from its C++ core
            raise ArtifactError(
                f"onnxruntime cannot load {self.onnx_path} ({_first_line(exc)}); it is corrupt or incomplete: "
                f"re-export it with `{self._rebuild()}`"
            ) from None
        used = session.get_providers()
        if self.providers == "cuda" and CUDA not in used:
            raise BackendError(
                f"onnxruntime fell back from CUDA to {used[0]} for {self.onnx_path.name}; "
                "check the CUDA and cuDNN libraries onnxruntime-gpu needs, or use providers='cpu'"
            )
        if CUDA in wanted and CUDA not in used:
            log.warning("onnxruntime could not start CUDA for %s; running on %s", self.onnx_path.name, used[0])
        self._check_session_metadata(session)
        self._session = session
        self.provider = used[0]
        self._output_names = [o.name for o in session.get_outputs()]

    def _check_session_metadata(self, session) -> None:
        stored = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if stored is None:
            raise ArtifactError(
                f"{self.onnx_path} carries no edge-mm model spec (metadata key {METADATA_KEY!r}); "
                f"export it with `{self._rebuild()}`"
            )
        if self._spec_from_file and ModelSpec.from_json(stored).to_dict() != self.spec.to_dict():
            raise ArtifactError(f"{self.onnx_path} changed while it was being loaded; load it again")
        model_inputs = {i.name for i in session.get_inputs()}
        spec_inputs = {t.name for t in self.spec.inputs}
        if model_inputs != spec_inputs:
            raise ArtifactError(
                f"{self.onnx_path} takes inputs {sorted(model_inputs)} but its spec says {sorted(spec_inputs)}; "
                f"re-export it with `{self._rebuild()}`"
            )

    def infer_impl(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        try:
            outputs = self._session.run(self._output_names, feeds)
        except Exception as exc:
            raise BackendError(
                f"onnxruntime failed on {self.onnx_path.name} ({_first_line(exc)}); "
                f"check the input sizes against the spec: {[(t.name, t.shape) for t in self.spec.inputs]}"
            ) from None
        return dict(zip(self._output_names, outputs))

    def deactivate_impl(self) -> None:
        self._session = None
        self.provider = None

    def _rebuild(self) -> str:
        name = self.spec.name if getattr(self, "spec", None) is not None else None
        return export_command(self.onnx_path.parent, name)
