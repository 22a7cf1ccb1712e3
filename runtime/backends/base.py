"""The interface every inference backend implements (torch-free).

Modelled on Polygraphy's runners: public `activate / infer / deactivate`, subclasses override the
`*_impl` methods, inputs are checked once here, and a backend is a context manager.
"""

from __future__ import annotations

import time
from typing import Dict, List, Mapping, Optional

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
