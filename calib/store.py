"""Calibration sets on disk: one deterministic zip of .npy arrays plus a manifest (torch-free).

Same inputs, same bytes: entries are written in a fixed order with a fixed timestamp, so a set can
be checked into a cache and compared by hash. Float inputs are stored as float16 (half the size;
calibration statistics do not need more) and come back as float32.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, Union

import numpy as np

from edge_mm.atomic import atomic_path
from edge_mm.errors import CalibrationError
from edge_mm.spec import ModelSpec

FORMAT = 1
MANIFEST = "manifest.json"
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)


@dataclasses.dataclass
class CalibrationSet:
    manifest: Dict[str, Any]
    arrays: Dict[str, np.ndarray]

    @property
    def count(self) -> int:
        return int(self.manifest["count"])

    @property
    def spec_digest(self) -> str:
        return self.manifest["spec_digest"]

    def check_spec(self, spec: ModelSpec, where: str = "") -> None:
        """Refuse a set made with other preprocessing or inputs than `spec` describes."""
        if self.spec_digest != spec.digest():
            made_for = self.manifest.get("model")
            what = "other preprocessing or inputs than" if made_for == spec.name else f"{made_for!r}, not for"
            raise CalibrationError(
                f"calibration set{where} was made for {what} {spec.name!r} "
                f"(spec {self.spec_digest[:12]} vs {spec.digest()[:12]}); "
                f"rebuild it with `python -m calib.build --model {spec.name} ...`"
            )

    def batches(self, batch_size: int) -> Iterator[Dict[str, np.ndarray]]:
        """Feed dicts of up to `batch_size` samples, in stored order, float inputs as float32."""
        for start in range(0, self.count, batch_size):
            yield {name: _as_model_dtype(a[start : start + batch_size]) for name, a in self.arrays.items()}


def _as_model_dtype(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array.astype(np.float32) if array.dtype == np.float16 else array)


def _stored_dtype(array: np.ndarray) -> np.dtype:
    return np.dtype(np.float16) if array.dtype.kind == "f" else array.dtype


def _zip_entry(zf: zipfile.ZipFile, name: str, size: int) -> Any:
    """A deflated entry with the fixed timestamp; its size given up front, as writestr does (same bytes)."""
    info = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    info.file_size = size
    return zf.open(info, "w")


def write_set(path: Union[str, Path], arrays: Dict[str, np.ndarray], manifest: Dict[str, Any]) -> Path:
    """Write arrays (each (N, ...)) and the manifest atomically; return the path."""
    counts = {name: len(a) for name, a in arrays.items()}
    if len(set(counts.values())) != 1:
        raise CalibrationError(
            f"calibration arrays have different sample counts {counts}; this is a bug in the sampler"
        )
    count = next(iter(counts.values()))
    return stream_set(path, ({n: a[i] for n, a in arrays.items()} for i in range(count)), count, manifest)


def stream_set(
    path: Union[str, Path], samples: Iterable[Dict[str, np.ndarray]], count: int, manifest: Dict[str, Any]
) -> Path:
    """Write `count` samples ({input: array without the batch axis}) as they come, atomically.

    Each input's samples go to an .npy file on disk (a memory map) while they are drawn, and are
    copied into the zip at the end: memory holds one sample, whatever the count.
    """
    path = Path(path)
    try:
        with atomic_path(path) as tmp, tempfile.TemporaryDirectory(prefix=f".{path.name}.", dir=path.parent) as work:
            maps: Dict[str, np.ndarray] = {}
            dtypes: Dict[str, str] = {}
            seen = 0
            for sample in samples:
                if seen >= count:
                    break
                if not maps:
                    for name, a in sorted(sample.items()):
                        maps[name] = np.lib.format.open_memmap(
                            os.path.join(work, f"{name}.npy"), "w+", _stored_dtype(a), (count, *a.shape)
                        )
                        dtypes[name] = str(a.dtype)
                if set(sample) != set(maps):
                    raise CalibrationError(f"a sample has inputs {sorted(sample)}, not {sorted(maps)}; a sampler bug")
                for name, a in sample.items():
                    maps[name][seen] = a
                seen += 1
            if seen != count:
                raise CalibrationError(f"the source gave {seen} of {count} samples; lower --count or add data")
            for m in maps.values():
                m.flush()
            full = dict(manifest)
            full.update(
                format=FORMAT,
                count=count,
                arrays={
                    name: {"shape": list(m.shape[1:]), "stored_dtype": str(m.dtype), "dtype": dtypes[name]}
                    for name, m in maps.items()
                },
            )
            maps.clear()  # close the memory maps before the files are read back
            with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
                text = json.dumps(full, sort_keys=True, indent=1).encode()
                with _zip_entry(zf, MANIFEST, len(text)) as fh:
                    fh.write(text)
                for name in sorted(full["arrays"]):
                    npy = os.path.join(work, f"{name}.npy")
                    with open(npy, "rb") as src, _zip_entry(zf, f"{name}.npy", os.path.getsize(npy)) as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
    except OSError as exc:
        raise CalibrationError(
            f"cannot write calibration set {path} ({exc.strerror or exc}); choose a writable --out"
        ) from None
    return path


def read_set(path: Union[str, Path]) -> CalibrationSet:
    path = Path(path)
    if not path.is_file():
        raise CalibrationError(
            f"no calibration set at {path}; build one with `python -m calib.build --model NAME --out {path}`"
        )
    try:
        with zipfile.ZipFile(path) as zf:
            manifest = json.loads(zf.read(MANIFEST))
            if manifest.get("format") != FORMAT:
                raise CalibrationError(
                    f"calibration set {path} has format {manifest.get('format')!r}, expected {FORMAT}; rebuild it"
                )
            arrays = {}
            for name in manifest["arrays"]:
                with zf.open(f"{name}.npy") as fh:
                    arrays[name] = np.lib.format.read_array(io.BytesIO(fh.read()), allow_pickle=False)
    except CalibrationError:
        raise
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
        raise CalibrationError(
            f"calibration set {path} is corrupt ({exc}); rebuild it with `python -m calib.build`"
        ) from None
    for name, array in arrays.items():
        if len(array) != manifest["count"]:
            raise CalibrationError(
                f"calibration set {path} is corrupt (array {name!r} holds {len(array)} of {manifest['count']} samples); rebuild it"
            )
    return CalibrationSet(manifest=manifest, arrays=arrays)
