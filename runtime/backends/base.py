"""The interface every inference backend implements (torch-free).

Modelled on Polygraphy's runners: public `activate / infer / deactivate`, subclasses override the
`*_impl` methods, inputs are checked once here, batched inference over many samples is here, and a
backend is a context manager. Each backend also has two class methods that selection uses
(runtime/backends/select.py): `probe(artifact) -> reasons it cannot run here` ([] when it can) and
`from_artifact(artifact, precision, **options)`.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional

import numpy as np

from edge_mm.errors import BackendError, InputError
from edge_mm.spec import ModelSpec, TensorSpec


class Backend:
    """Runs one model variant. Subclasses set `name` and implement the `*_impl` methods."""

    name = "base"

    def __init__(self, spec: ModelSpec, precision: str) -> None:
        self.spec = spec
        self.precision = precision
        self.is_active = False
        self.last_infer_seconds: Optional[float] = None

    # -- what subclasses implement ------------------------------------------------------------
    def activate_impl(self) -> None:
        raise NotImplementedError

    def infer_impl(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        raise NotImplementedError

    def deactivate_impl(self) -> None:
        pass

    # -- the public interface -----------------------------------------------------------------
    @property
    def input_specs(self) -> List[TensorSpec]:
        return self.spec.inputs

    @property
    def output_specs(self) -> List[TensorSpec]:
        return self.spec.outputs

    def activate(self) -> "Backend":
        if not self.is_active:
            self.activate_impl()
            self.is_active = True
        return self

    def deactivate(self) -> None:
        if self.is_active:
            self.deactivate_impl()
            self.is_active = False

    def infer(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        if not self.is_active:
            raise BackendError(f"{self.name} backend used before activate(); use it as a context manager")
        checked = self.check_inputs(feeds)
        start = time.perf_counter()
        outputs = self.infer_impl(checked)
        self.last_infer_seconds = time.perf_counter() - start
        return outputs

    def infer_batched(
        self,
        feeds: Mapping[str, np.ndarray],
        batch: int,
        progress: Optional[Callable[[Iterable[int]], Iterable[int]]] = None,
    ) -> Dict[str, np.ndarray]:
        """`infer` over axis 0 of `feeds` in slices of at most `batch` samples, outputs concatenated.

        progress: wraps the batch start indices (e.g. a tqdm bar) to show long runs.
        """
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise InputError(f"batch must be a positive integer, got {batch!r}")
        counts = {len(np.asarray(v)) for v in feeds.values()}
        if len(counts) != 1:
            raise InputError(f"inputs disagree on the number of samples (axis 0): {sorted(counts)}")
        count = counts.pop()
        starts: Iterable[int] = range(0, count, batch)
        if progress is not None:
            starts = progress(starts)
        parts = [
            self.infer({name: np.asarray(value)[start : start + batch] for name, value in feeds.items()})
            for start in starts
        ]
        if not parts:
            raise InputError("no samples to run (axis 0 is empty)")
        return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}

    @classmethod
    def probe(cls, artifact: Any) -> List[str]:
        """Why this backend cannot run `artifact` on this machine; [] when it can."""
        raise NotImplementedError

    @classmethod
    def from_artifact(cls, artifact: Any, precision: str, **options: Any) -> "Backend":
        """An (inactive) backend for the artifact's `precision` variant."""
        raise NotImplementedError

    def check_inputs(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        expected = {t.name: t for t in self.input_specs}
        missing = sorted(set(expected) - set(feeds))
        extra = sorted(set(feeds) - set(expected))
        if missing or extra:
            raise InputError(
                f"inputs do not match the model: missing {missing}, unexpected {extra}; "
                f"the model takes {sorted(expected)}"
            )
        checked = {}
        for name, tensor in expected.items():
            array = np.asarray(feeds[name])
            if array.dtype != np.dtype(tensor.dtype):
                raise InputError(f"input {name!r} has dtype {array.dtype}; the model takes {tensor.dtype}")
            if array.ndim != len(tensor.shape):
                raise InputError(
                    f"input {name!r} has shape {array.shape}; the model takes rank {len(tensor.shape)} {tensor.shape}"
                )
            for axis, (got, want) in enumerate(zip(array.shape, tensor.shape)):
                if isinstance(want, int) and got != want:
                    raise InputError(f"input {name!r} has shape {array.shape}; axis {axis} must be {want}")
            checked[name] = np.ascontiguousarray(array)
        return checked

    def __enter__(self) -> "Backend":
        return self.activate()

    def __exit__(self, *exc) -> None:
        self.deactivate()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec.name}, {self.precision})"
