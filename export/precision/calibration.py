"""Calibration feeds for ONNX Runtime's static quantization.

Any iterable of feed dicts `{input_name: np.ndarray}` works: a list, a generator, or an object whose
`__iter__` yields feeds anew each time (a stored calibration set). ORT pulls feeds one by one
through `CalibrationDataReader.get_next()`.
"""

from __future__ import annotations

from typing import Dict, Iterable, Iterator, Mapping, Optional

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from edge_mm.errors import CalibrationError


class FeedsCalibrationReader(CalibrationDataReader):
    """Feed dicts from any iterable, checked against the model's inputs when `expected` is given.

    expected: {input_name: numpy dtype} of the model; feeds that miss or add inputs, or carry
    another dtype, raise CalibrationError instead of failing deep inside ONNX Runtime.
    progress: show a tqdm bar while ORT pulls feeds (calibration runs the model once per feed).
    """

    def __init__(
        self,
        feeds: Iterable[Mapping[str, np.ndarray]],
        expected: Optional[Mapping[str, np.dtype]] = None,
        progress: bool = False,
        total: Optional[int] = None,
    ) -> None:
        self._feeds = feeds
        self._expected = dict(expected) if expected is not None else None
        self._progress = progress
        self._total = total if total is not None else (len(feeds) if hasattr(feeds, "__len__") else None)
        self._iterator: Optional[Iterator[Mapping[str, np.ndarray]]] = None
        self._bar = None
        self.count = 0  # feeds handed out since the last rewind

    def expect(self, expected: Mapping[str, np.dtype]) -> "FeedsCalibrationReader":
        self._expected = dict(expected)
        return self

    def get_next(self) -> Optional[Dict[str, np.ndarray]]:
        if self._iterator is None:
            self._start()
        item = next(self._iterator, None)
        if item is None:
            self._close_bar()
            return None
        feed = self._check(item)
        self.count += 1
        if self._bar is not None:
            self._bar.update(1)
        return feed

    def rewind(self) -> None:
        """Start over. A one-shot generator cannot be replayed: pass a list or a re-iterable instead."""
        self._close_bar()
        self._iterator = None

    def _start(self) -> None:
        self.count = 0
        self._iterator = iter(self._feeds)
        if self._progress:
            from tqdm import tqdm

            self._bar = tqdm(total=self._total, desc="calibrating", unit="feed", leave=False)

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _check(self, item: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        if not isinstance(item, Mapping):
            raise CalibrationError(
                f"calibration feed {self.count} is a {type(item).__name__}, not a dict of input name -> array; "
                "yield {input_name: np.ndarray} per batch"
            )
        feed = {str(k): np.asarray(v) for k, v in item.items()}
        if self._expected is not None:
            missing = sorted(set(self._expected) - set(feed))
            extra = sorted(set(feed) - set(self._expected))
            if missing or extra:
                raise CalibrationError(
                    f"calibration feed {self.count} does not match the model: missing {missing}, unexpected {extra}; "
                    "the calibration set was made for another model"
                )
            for name, dtype in self._expected.items():
                if feed[name].dtype != np.dtype(dtype):
                    raise CalibrationError(
                        f"calibration feed {self.count} input {name!r} has dtype {feed[name].dtype}, the model takes "
                        f"{np.dtype(dtype)}; rebuild the calibration set with this model's preprocessing"
                    )
        return feed
