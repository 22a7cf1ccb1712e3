"""Pipeline measurements: per-stage times, throughput and capture-to-result latency.

Every stage reports how long it took per frame; the output stage reports when a frame's result was
done. From those come: the stage times (mean, p50, p95, max), the pipeline's throughput (over the
whole run and over the last few seconds), and the latency from capture (`Frame.capture_time`, the
moment the frame reached the host) to the result being written, p50/p95/max.

Two model figures, each named for what was measured:
- `model_alone_fps`: the backend timed on its own before the run starts (`measure_model_alone`),
  nothing else running; `pipeline_vs_model` is the pipeline's throughput over this one.
- `infer_in_pipeline_fps`: 1 / mean inference time inside the running pipeline, where inference
  shares the cores with capture, preprocessing and rendering (so it is slower on a CPU backend).

Per stage there are two times: wall (`stages_ms`) and the CPU time of the thread that ran it
(`stages_cpu_ms`, time.thread_time: what the step costs the machine, which on a loaded or small
CPU is the figure to cut; a backend's own worker threads are not in the inference figure).
Per-frame metrics that stages report (e.g. `iou_vs_ground_truth`) are summarised by name.
Thread-safe (one lock; counters are set through `set_counter`); times are seconds.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Tuple

import numpy as np

# Keep this many recent samples per series for percentiles: hours of video at 30 FPS without
# unbounded memory; counts, means and maxima still cover the whole run.
MAX_SAMPLES = 200_000
OVERLAY_REFRESH_S = 0.5
STAGE_ORDER = ("capture", "preprocess", "infer", "postprocess", "render", "output")
STAGE_LABELS = {
    "capture": "cap",
    "preprocess": "pre",
    "infer": "infer",
    "postprocess": "post",
    "render": "draw",
    "output": "out",
}  # short enough for a 640-pixel-wide frame


class Series:
    """Samples of one quantity: exact count/mean/max over the run, percentiles over the recent MAX_SAMPLES."""

    def __init__(self, max_samples: int = MAX_SAMPLES) -> None:
        self.samples: Deque[float] = collections.deque(maxlen=max_samples)
        self.count = 0
        self.total = 0.0
        self.max = 0.0

    def add(self, value: float) -> None:
        self.samples.append(value)
        self.count += 1
        self.total += value
        self.max = max(self.max, value)

    def summary(self, scale: float = 1000.0, digits: int = 2) -> Dict[str, Any]:
        """{count, mean, p50, p95, max} scaled (seconds -> ms by default); None values when empty."""
        if not self.count:
            return {"count": 0, "mean": None, "p50": None, "p95": None, "max": None}
        p50, p95 = np.percentile(np.fromiter(self.samples, float), [50, 95])
        r = lambda v: round(float(v) * scale, digits)  # noqa: E731
        return {
            "count": self.count,
            "mean": r(self.total / self.count),
            "p50": r(p50),
            "p95": r(p95),
            "max": r(self.max),
        }


def percentiles_ms(values: Sequence[float]) -> Tuple[Optional[float], Optional[float]]:
    if not values:
        return None, None
    p50, p95 = np.percentile(np.asarray(values, float), [50, 95])
    return float(p50) * 1000.0, float(p95) * 1000.0


class PipelineStats:
    """Collects the measurements of one run; `snapshot()` for live display, `summary()` at the end.

    window_s: the span of the "current" FPS and latency shown on the frame and printed periodically.
    """

    def __init__(self, window_s: float = 2.0) -> None:
        self.window_s = window_s
        self._lock = threading.Lock()
        self.stages: Dict[str, Series] = {}
        self.stages_cpu: Dict[str, Series] = {}
        self.latency = Series()
        self.metrics: Dict[str, Series] = {}
        self._recent: Deque[Tuple[float, float]] = collections.deque()  # (done time, latency)
        self.start_time: Optional[float] = None
        self.first_done: Optional[float] = None
        self.last_done: Optional[float] = None
        self.frames = 0
        self.info: Dict[str, Any] = {}  # model, backend, source, outputs: for the summary and the status page
        self.model_alone: Optional[Dict[str, Any]] = None  # set from measure_model_alone() before the run
        self.counters: Dict[str, int] = {}  # e.g. dropped frames, reconnects (set_counter)
        self._overlay_cache: Optional[Tuple[str, float, List[str]]] = None

    # -- recording ------------------------------------------------------------------------------
    def start(self, now: Optional[float] = None) -> None:
        with self._lock:
            self.start_time = time.perf_counter() if now is None else now

    def add_stage(self, stage: str, seconds: float, cpu_seconds: Optional[float] = None) -> None:
        with self._lock:
            series = self.stages.get(stage)
            if series is None:
                series = self.stages[stage] = Series()
            series.add(seconds)
            if cpu_seconds is not None:
                cpu = self.stages_cpu.get(stage)
                if cpu is None:
                    cpu = self.stages_cpu[stage] = Series()
                cpu.add(cpu_seconds)

    def set_counter(self, name: str, value: int) -> None:
        with self._lock:
            self.counters[name] = value

    def frame_done(
        self, capture_time: float, done_time: Optional[float] = None, metrics: Optional[Dict[str, float]] = None
    ) -> None:
        done = time.perf_counter() if done_time is None else done_time
        latency = max(0.0, done - capture_time)
        with self._lock:
            if self.start_time is None:
                self.start_time = capture_time
            self.frames += 1
            self.latency.add(latency)
            for name, value in (metrics or {}).items():
                if value is not None:
                    self.metrics.setdefault(name, Series()).add(float(value))
            if self.first_done is None:
                self.first_done = done
            self.last_done = done
            self._recent.append((done, latency))
            self._trim(done)

    def _trim(self, now: float) -> None:
        while self._recent and self._recent[0][0] < now - self.window_s:
            self._recent.popleft()

    # -- reading --------------------------------------------------------------------------------
    def current(self, now: Optional[float] = None) -> Dict[str, Optional[float]]:
        """FPS and latency p50/p95 (ms) over the last window_s seconds, and mean stage times (ms)."""
        now = time.perf_counter() if now is None else now
        with self._lock:
            self._trim(now)
            recent = list(self._recent)
            stage_means = {name: (s.total / s.count * 1000.0 if s.count else None) for name, s in self.stages.items()}
            started = self.start_time
        span = min(self.window_s, now - started) if started is not None else 0.0
        fps = len(recent) / span if span > 0 and recent else 0.0
        p50, p95 = percentiles_ms([lat for _, lat in recent])
        return {
            "fps": fps,
            "latency_p50_ms": p50,
            "latency_p95_ms": p95,
            **{f"{k}_ms": v for k, v in stage_means.items()},
        }

    def recent_stage_ms(self, samples: int = 30) -> Dict[str, float]:
        """Mean time (ms) of each stage over its last `samples` frames, in pipeline order (a live chart's points)."""
        with self._lock:
            out = {}
            for name in self._ordered_stage_names():
                series = self.stages[name].samples
                tail = [series[i] for i in range(max(0, len(series) - samples), len(series))]
                if tail:
                    out[name] = round(1000.0 * sum(tail) / len(tail), 3)
        return out

    def overlay_lines(self, backend_label: str = "") -> List[str]:
        """Two short lines for the frame: throughput + latency, then the stage times (and the label).

        Refreshed every OVERLAY_REFRESH_S, not every frame: readable, and the text panel is drawn
        once per change instead of once per frame (anti-aliased text is the overlay's costly part).
        """
        now = time.perf_counter()
        with self._lock:
            cached = self._overlay_cache
        if cached is not None and cached[0] == backend_label and now - cached[1] < OVERLAY_REFRESH_S:
            return list(cached[2])
        lines = self._overlay_lines(backend_label)
        with self._lock:
            self._overlay_cache = (backend_label, now, lines)
        return list(lines)

    def _overlay_lines(self, backend_label: str) -> List[str]:
        cur = self.current()
        lat = (
            f"latency p50 {cur['latency_p50_ms']:.0f} / p95 {cur['latency_p95_ms']:.0f} ms"
            if cur["latency_p50_ms"] is not None
            else "latency -"
        )
        first = f"{cur['fps']:.1f} FPS | {lat}"
        parts = [
            f"{STAGE_LABELS[name]} {cur[f'{name}_ms']:.1f}" for name in STAGE_ORDER if cur.get(f"{name}_ms") is not None
        ]
        second = "ms: " + " | ".join(parts) if parts else ""
        return [first, second, backend_label]

    def progress_line(self) -> str:
        """One line for the periodic console print."""
        cur = self.current()
        lat = (
            f"latency p50 {cur['latency_p50_ms']:.1f} ms p95 {cur['latency_p95_ms']:.1f} ms"
            if cur["latency_p50_ms"] is not None
            else "latency -"
        )
        stages = ", ".join(f"{n} {cur[f'{n}_ms']:.1f}" for n in STAGE_ORDER if cur.get(f"{n}_ms") is not None)
        extra = "".join(f", {k} {v}" for k, v in self.counters.items() if v)
        return f"[{self.frames} frames] {cur['fps']:.1f} FPS, {lat}; stage means ms: {stages}{extra}"

    def summary(self) -> Dict[str, Any]:
        """Everything about the run so far, JSON-able."""
        with self._lock:
            stages = {name: self.stages[name].summary() for name in self._ordered_stage_names()}
            stages_cpu = {name: self.stages_cpu[name].summary()["mean"] for name in stages if name in self.stages_cpu}
            latency = self.latency.summary()
            metrics = {}
            for name, series in self.metrics.items():
                m = series.summary(scale=1.0, digits=4)
                metrics[name] = {
                    "mean": m["mean"],
                    "p50": m["p50"],
                    "min": round(min(series.samples), 4),
                    "count": m["count"],
                }
            frames, first, last, started = self.frames, self.first_done, self.last_done, self.start_time
            counters = dict(self.counters)
        wall = (last - started) if (last is not None and started is not None) else 0.0
        # Throughput in steady state: results after the first one over the time since the first one
        # (the time to the first result is the pipeline filling up, which is latency, not throughput).
        steady = (last - first) if (last is not None and first is not None) else 0.0
        fps = (frames - 1) / steady if frames > 1 and steady > 0 else None
        infer_mean = stages.get("infer", {}).get("mean")
        infer_fps = 1000.0 / infer_mean if infer_mean else None
        model_fps = self.model_alone["fps"] if self.model_alone else None
        out: Dict[str, Any] = {
            **self.info,
            "frames": frames,
            "wall_s": round(wall, 3),
            "fps": None if fps is None else round(fps, 2),
            "model_alone": self.model_alone,
            "model_alone_fps": model_fps,
            "pipeline_vs_model": None if (fps is None or model_fps is None) else round(fps / model_fps, 3),
            "infer_in_pipeline_fps": None if infer_fps is None else round(infer_fps, 2),
            "latency_ms": latency,
            "stages_ms": stages,
            "stages_cpu_ms": stages_cpu,
            **counters,
            **metrics,
        }
        return out

    def _ordered_stage_names(self) -> List[str]:
        known = [s for s in STAGE_ORDER if s in self.stages]
        return known + sorted(s for s in self.stages if s not in STAGE_ORDER)


def format_summary(summary: Dict[str, Any]) -> str:
    """A few human-readable lines from PipelineStats.summary()."""
    lines = []
    fps, model_fps, ratio = summary.get("fps"), summary.get("model_alone_fps"), summary.get("pipeline_vs_model")
    head = f"{summary.get('frames', 0)} frames in {summary.get('wall_s', 0):.1f} s"
    if fps is not None:
        head += f": {fps:.1f} FPS"
    alone = summary.get("model_alone")
    if model_fps is not None and alone:
        head += f" (model alone {model_fps:.1f} FPS, measured alone over {alone['runs']} runs before the start"
        head += f"; pipeline/model {ratio:.2f})" if ratio is not None else ")"
    infer_fps = summary.get("infer_in_pipeline_fps")
    if infer_fps is not None:
        head += f"; inference inside the pipeline {infer_fps:.1f} FPS"
    lines.append(head)
    lat = summary.get("latency_ms", {})
    if lat.get("count"):
        lines.append(
            f"capture-to-result latency: p50 {lat['p50']:.1f} ms, p95 {lat['p95']:.1f} ms, max {lat['max']:.1f} ms"
        )
    stages = summary.get("stages_ms", {})
    if stages:
        lines.append(
            "stage times (mean / p95 ms): "
            + ", ".join(f"{name} {s['mean']:.1f}/{s['p95']:.1f}" for name, s in stages.items() if s.get("count"))
        )
    iou = summary.get("iou_vs_ground_truth")
    if iou:
        lines.append(f"mask IoU vs ground truth: mean {iou['mean']:.3f} over {iou['count']} frames")
    extras = [f"{k} {summary[k]}" for k in ("dropped", "reconnects") if summary.get(k)]
    if extras:
        lines.append(", ".join(extras))
    return "\n".join(lines)


def measure_model_alone(
    infer_once: Callable[[], Any], *, warmup: int = 2, min_runs: int = 5, max_runs: int = 50, budget_s: float = 1.5
) -> Dict[str, Any]:
    """Time `infer_once` on its own: `warmup` untimed calls, then at least `min_runs` timed ones and
    more while within `budget_s` (at most `max_runs`). The median call gives the model's own FPS."""
    for _ in range(warmup):
        infer_once()
    times: List[float] = []
    deadline = time.perf_counter() + budget_s
    while len(times) < min_runs or (len(times) < max_runs and time.perf_counter() < deadline):
        start = time.perf_counter()
        infer_once()
        times.append(time.perf_counter() - start)
    median = float(np.median(times))
    return {"fps": round(1.0 / median, 2), "median_ms": round(median * 1000.0, 3), "runs": len(times)}
