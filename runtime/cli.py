"""`edge-mm-run`: RGB-D salient object detection on a camera, a recording or synthetic scenes.

    edge-mm-run                                  # camera if one is plugged in, else synthetic scenes
    edge-mm-run --camera realsense               # a RealSense D4xx (window, or headless outputs)
    edge-mm-run --camera recording:run.db3 --out run.mp4 --events run.jsonl
    edge-mm-run --camera synthetic --frames 300 --headless --out demo.mp4 --stats demo.json
    edge-mm-run --camera realsense --serve 127.0.0.1:8080          # live page at http://127.0.0.1:8080/

The model is an artifact folder made by `python -m export.build_engine` (default: artifacts/cdinet-s,
or $EDGE_MM_MODEL); its spec decides the preprocessing. The backend is chosen automatically and
printed. With no window (no display, or a headless OpenCV) and no output named, the annotated
video, events and stats go to runs/<time>/. Keys in the window: q quit, space pause,
s snapshot, o overlay on/off, r record.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from edge_mm.cli_support import (
    CliParser,
    interrupt_exit_code,
    non_negative_number,
    positive_number,
    run_cli,
)
from edge_mm.errors import ArtifactError, SourceError, UsageError

DEFAULT_MODEL_DIR = Path("artifacts") / "cdinet-s"
MODEL_ENV = "EDGE_MM_MODEL"
CONFIG_ENV = "EDGE_MM_RUN_CONFIG"
DEFAULT_SYNTHETIC_FRAMES = 300
RUNS_DIR = Path("runs")
KNOWN_MODEL_NAMES = ("cdinet-s", "cdinet")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"{text} must be in [0, 1)")
    return value


def _size(text: str) -> Tuple[int, int]:
    """'640x480' (W x H) -> (W, H)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not WIDTHxHEIGHT, e.g. 640x480") from None
    from runtime.sources import MAX_SIDE

    if not (16 <= w <= MAX_SIDE and 16 <= h <= MAX_SIDE):
        raise argparse.ArgumentTypeError(f"{text!r}: width and height must be 16 to {MAX_SIDE}, e.g. 640x480")
    return w, h


def _frame_rate(text: str) -> float:
    """A finite rate above 0 and at most what a video can hold (runtime.sinks.video.MAX_FPS)."""
    from runtime.sinks.video import MAX_FPS

    value = positive_number(text)
    if value > MAX_FPS:
        raise argparse.ArgumentTypeError(f"{text!r} is above {MAX_FPS:g} frames per second")
    return value


def build_parser() -> argparse.ArgumentParser:
    from runtime.backends.select import BACKENDS, PRECISIONS
    from runtime.overlay import COLORMAPS
    from runtime.sources import SOURCE_FORMS
    from runtime.stages import registered

    p = CliParser(prog="edge-mm-run", description=__doc__)
    p.add_argument(
        "--config",
        metavar="FILE.toml",
        help=f"TOML file with any of these options (flags override it; default ${CONFIG_ENV})",
    )
    p.add_argument("--print-config", action="store_true", help="print the effective settings as TOML and exit")
    g = p.add_argument_group("model")
    g.add_argument("--model", metavar="DIR", help=f"artifact folder (default ${MODEL_ENV} or {DEFAULT_MODEL_DIR})")
    g.add_argument(
        "--backend", choices=BACKENDS, default="auto", help="default auto: TensorRT engine > ORT CUDA > ORT CPU"
    )
    g.add_argument(
        "--precision", choices=PRECISIONS, default="auto", help="model variant (default auto, see docs/runtime.md)"
    )
    g.add_argument(
        "--threads", type=_positive_int, metavar="N", help="ONNX Runtime intra-op threads (default: its own)"
    )
    g.add_argument(
        "--no-build",
        action="store_true",
        help="never build a TensorRT engine on first run (default: build one here when none matches and TensorRT can)",
    )
    g.add_argument(
        "--target-sm",
        action="append",
        metavar="N",
        help="first-run build with TensorRT-RTX ahead of time for compute capability N (86, 89, 120; repeatable)",
    )
    g.add_argument(
        "--workers",
        type=_positive_int,
        metavar="K",
        help="threads each for preprocessing and rendering (default 1 on CPU, 2 on GPU)",
    )
    g.add_argument(
        "--even-threads",
        action="store_true",
        help="run preprocessing, rendering and video encoding at normal priority on any core (default: below "
        "the model and off its core; use this when the cores are shared with other busy work)",
    )
    g.add_argument(
        "--threshold",
        type=_fraction,
        default=0.5,
        metavar="T",
        help="saliency threshold of the mask and box; 0 = heat map only (default 0.5)",
    )
    s = p.add_argument_group("source")
    s.add_argument(
        "--camera",
        "--source",
        dest="camera",
        default="auto",
        metavar="URI",
        help=f"auto (RealSense if plugged in, else synthetic), {SOURCE_FORMS}",
    )
    s.add_argument(
        "--frames",
        type=_positive_int,
        metavar="N",
        help=f"stop after N frames (synthetic default {DEFAULT_SYNTHETIC_FRAMES})",
    )
    s.add_argument("--loop", action="store_true", help="replay a recording or folder (synthetic: run until stopped)")
    s.add_argument(
        "--size", type=_size, metavar="WxH", help="capture size WIDTHxHEIGHT (RealSense, synthetic; default 640x480)"
    )
    s.add_argument(
        "--fps",
        type=_frame_rate,
        metavar="FPS",
        help="RealSense frame rate; for synthetic scenes, pace them like a camera",
    )
    s.add_argument("--record", metavar="FILE.db3", help="RealSense only: also record the raw streams to FILE.db3")
    o = p.add_argument_group("outputs")
    o.add_argument("--headless", action="store_true", help="no window (automatic without a display or GUI)")
    o.add_argument("--window", action="store_true", help="require a window (error if none can open)")
    o.add_argument(
        "--out",
        metavar="FILE.mp4",
        help="annotated video FILE.mp4 (or .avi); or ROS 2 messages: run.mcap (Foxglove), run.rosbag2 (ros2 bag play)",
    )
    o.add_argument(
        "--out-fps",
        type=_frame_rate,
        metavar="FPS",
        help="frame rate written into the video (default: the source's, or 30)",
    )
    o.add_argument(
        "--serve",
        metavar="HOST:PORT",
        help="live web page (stream, numbers, events, search with --index) on HOST:PORT (host defaults to 127.0.0.1)",
    )
    o.add_argument(
        "--serve-token",
        metavar="TOKEN",
        help="the token the page asks for (default: made up and printed when --serve binds beyond loopback)",
    )
    o.add_argument(
        "--serve-name",
        action="append",
        default=[],
        metavar="NAME",
        help="a host name the page answers to besides its address (repeatable; others are refused)",
    )
    o.add_argument("--events", metavar="FILE.jsonl", help="JSON lines, one per frame: time, box, score, depth")
    o.add_argument(
        "--stats", metavar="FILE.json", help="write the run's statistics as JSON to FILE (updated while running)"
    )
    o.add_argument(
        "--stats-interval",
        type=non_negative_number,
        default=5.0,
        metavar="S",
        help="seconds between progress prints (0: none; default 5)",
    )
    o.add_argument("--snapshot-dir", metavar="DIR", help="where s (snapshot) and r (record) write (default runs/)")
    o.add_argument(
        "--alpha", type=float, default=0.5, metavar="A", help="heat-map opacity at probability 1 (default 0.5)"
    )
    o.add_argument("--colormap", choices=sorted(COLORMAPS), default="jet", help="heat-map colours (default jet)")
    o.add_argument("--no-overlay", action="store_true", help="start with the heat map off (o toggles it)")
    o.add_argument("--quiet", action="store_true", help="print only warnings, errors and the summary")
    o.add_argument(
        "--force", action="store_true", help="replace output files even when they are not this command's own kind"
    )
    for factory in registered():  # each stage's own options (e.g. CLIP's --clip, --labels, --query)
        factory.add_arguments(p)
    return p


def parse_args(argv: Optional[Sequence[str]]) -> Tuple[argparse.Namespace, Dict[str, Any]]:
    """Flags over config over built-in defaults; returns (args, [source] options from the config)."""
    from runtime.config import load_into

    parser = build_parser()
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    known, _ = pre.parse_known_args(list(argv or []))
    config_path = known.config or os.environ.get(CONFIG_ENV)
    source_options: Dict[str, Any] = {}
    if config_path:
        _, source_options = load_into(parser, config_path)
    args = parser.parse_args(list(argv or []))
    args.config = config_path
    if args.headless and args.window:
        raise UsageError("--headless and --window contradict each other; give one")
    if args.alpha is not None and not 0.0 <= args.alpha <= 1.0:
        raise UsageError(f"--alpha {args.alpha} must be in [0, 1]")
    if args.stats_interval < 0:
        raise UsageError("--stats-interval must be >= 0")
    if (args.serve_token or args.serve_name) and not args.serve:
        raise UsageError("--serve-token and --serve-name apply to the web page; add --serve HOST:PORT")
    return args, source_options


# -- resolving what to run ----------------------------------------------------------------------


def model_dir(args: argparse.Namespace) -> Path:
    return Path(args.model or os.environ.get(MODEL_ENV) or DEFAULT_MODEL_DIR)


def guess_model_name(path: Path) -> str:
    """The model an artifact folder was probably built from (its name), else the demo model."""
    return next((n for n in KNOWN_MODEL_NAMES if path.name.startswith(n)), "cdinet-s")


def open_artifact(path: Path):
    from edge_mm.artifact import Artifact
    from edge_mm.artifact_kind import require_artifact

    # Says what the path holds when it is not a saliency artifact; suggests a build only onto nothing.
    require_artifact(path, "--model", "saliency", guess_model_name(path))
    artifact = Artifact(path)
    try:
        artifact.spec  # reads model.onnx's spec: a corrupt file fails here, with the rebuild command
    except ArtifactError as exc:
        # Without a readable spec the model name is unknown; name the likely one in the command.
        raise ArtifactError(str(exc).replace("--model MODEL", f"--model {guess_model_name(path)}")) from None
    return artifact


def realsense_present() -> Tuple[bool, str]:
    """(True, serial) if a RealSense camera is connected, else (False, why not)."""
    try:
        from runtime.sources.rs_frames import import_pyrealsense2

        rs = import_pyrealsense2()
        devices = list(rs.context().query_devices())
    except (SourceError, RuntimeError) as exc:
        return False, str(exc)
    if not devices:
        return False, "no RealSense camera is connected"
    return True, devices[0].get_info(rs.camera_info.serial_number)


def resolve_camera(camera: str, say) -> str:
    if camera.strip().lower() != "auto":
        return camera
    found, detail = realsense_present()
    if found:
        say(f"camera: RealSense {detail} (--camera auto)")
        return "realsense"
    say(f"camera: synthetic scenes ({detail}; --camera realsense | recording:FILE | folder:DIR to choose)")
    return "synthetic"


def source_options(
    args: argparse.Namespace, uri: str, config_options: Dict[str, Any], frames: Optional[int]
) -> Dict[str, Any]:
    from runtime.sources import _source_class as source_class
    from runtime.sources import check_source_options, parse_source_uri

    kind, _ = parse_source_uri(uri)
    # The config's own values are checked even where a flag replaces them below (count by --frames).
    check_source_options(kind, source_class(kind), {k: v for k, v in config_options.items() if v is not None})
    options = dict(config_options)
    if args.size is not None:
        w, h = args.size
        if kind not in ("synthetic", "realsense"):
            raise UsageError(f"--size applies to realsense and synthetic sources; {kind} frames keep their own size")
        if kind == "synthetic":
            options["size"] = (h, w)
        else:
            options.update(width=w, height=h)
    if args.fps is not None:
        options["fps"] = int(args.fps) if kind == "realsense" else args.fps
    if args.record:
        options["record"] = args.record
    if args.loop and kind in ("recording", "folder", "rosbag"):
        options["loop"] = True
    if kind == "synthetic" and frames is not None and args.fps is None:
        # Unpaced scenes are a file-like source (every frame once): the generator stops there. Paced
        # ones are camera-like and may drop frames, so the pipeline counts the processed ones instead.
        options["count"] = frames
    return options


def default_run_dir() -> Path:
    return RUNS_DIR / time.strftime("edge-mm-run-%Y%m%d-%H%M%S")


# -- the run ------------------------------------------------------------------------------------


class _Console:
    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, flush=True)

    def always(self, text: str) -> None:
        print(text, flush=True)

    def warn(self, text: str) -> None:
        print(f"warning: {text}", file=sys.stderr, flush=True)


def _write_stats(path: Path, summary: Dict[str, Any]) -> None:
    from edge_mm.atomic import write_json

    write_json(path, summary, indent=2, default=str)


@dataclasses.dataclass
class OutputPlan:
    """Where results go, decided (and checked) before anything is opened."""

    window: bool
    out: Optional[str]
    events: Optional[str]
    stats: Optional[str]
    serve: Optional[Tuple[str, int]]
    snapshot_dir: Path


def out_kind(path: str):
    """What --out writes (a video, an .mcap file or a .rosbag2 folder), to know an earlier run's output."""
    from edge_mm.outputs import VIDEO, OutputKind, file_starting_with, folder_holding
    from runtime.sinks.mcap import ROSBAG2_SUFFIX, is_ros_output

    if not is_ros_output(path):
        return VIDEO
    if Path(path).suffix.lower() == ROSBAG2_SUFFIX:
        return OutputKind("a rosbag2 folder (metadata.yaml)", folder_holding("metadata.yaml"), folder=True)
    return OutputKind("an MCAP file", file_starting_with(b"\x89MCAP"))


def plan_outputs(args: argparse.Namespace, console: "_Console") -> OutputPlan:
    from edge_mm.outputs import EVENTS, STATS, OutputKind, check_outputs
    from runtime.sinks import check_out_path
    from runtime.sinks.window import gui_support
    from runtime.web.address import parse_host_port

    gui_ok, no_gui_reason = gui_support()
    if args.window and not gui_ok:
        raise UsageError(f"--window: no window can open here: {no_gui_reason}; use --headless with --out/--serve")
    window = gui_ok and not args.headless
    if not window and not args.headless:
        console.say(f"headless: {no_gui_reason}")
    plan = OutputPlan(
        window,
        args.out,
        args.events,
        args.stats,
        parse_host_port(args.serve) if args.serve else None,
        Path(args.snapshot_dir) if args.snapshot_dir else RUNS_DIR,
    )
    if not window and not (args.out or args.serve or args.events or args.stats):
        run_dir = default_run_dir()
        plan.out, plan.events, plan.stats = (
            str(run_dir / "annotated.mp4"),
            str(run_dir / "events.jsonl"),
            str(run_dir / "stats.json"),
        )
        console.say(
            f"outputs: none named and no window, so writing to {run_dir}/ (--out/--events/--stats/--serve to choose)"
        )
    if plan.out:
        check_out_path(plan.out)
    check_outputs(
        {
            "--out": (plan.out, out_kind(plan.out) if plan.out else None),
            "--events": (plan.events, EVENTS),
            "--stats": (plan.stats, STATS),
            "--record": (args.record, OutputKind("a RealSense recording", lambda p: p.suffix in (".db3", ".bag"))),
            "--snapshot-dir": (args.snapshot_dir, OutputKind("snapshots", lambda p: True, folder=True)),
        },
        force=args.force,
        inputs={"--config": args.config},  # no output may replace the run's own config file
    )
    return plan


def open_sinks(
    args: argparse.Namespace,
    plan: OutputPlan,
    console: "_Console",
    stats: Any,
    controls: Any,
    title: str,
    stages: Sequence[Any] = (),
):
    """(sinks, window or None), in the order they are written; what opened is closed by the caller."""
    from runtime.sinks import open_out_sink
    from runtime.sinks.events import EventsSink
    from runtime.sinks.window import WindowSink

    sinks: List[Any] = []
    window = None
    if plan.window:
        candidate = WindowSink(controls)
        try:
            candidate.open()
            window = candidate
            sinks.append(window)
        except Exception as exc:  # cv2.error: a GUI on paper that cannot open here
            detail = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            if args.window:
                raise UsageError(f"--window: the window did not open ({detail}); use --headless") from None
            console.warn(f"no window ({detail}); running headless")
    if plan.out:
        sinks.append(open_out_sink(plan.out, fps=stats.info["out_fps"]))  # video, or ROS 2 messages
    if plan.serve:
        from runtime.web.live import LiveView

        view = LiveView(
            *plan.serve, stats=stats, controls=controls, title=title, token=args.serve_token, names=args.serve_name
        )
        sinks.append(view)  # takes the stages' events (CLIP's) through write_event, as the events log does
        clip = next((stage for stage in stages if stage.name == "clip"), None)
        if clip is not None:  # CLIP's label and query on the page; with --index, the memory's search
            view.attach_clip(clip, getattr(args, "clip_index", None))
        server = view.server
        # The token is printed here, once, for the user to open; the server never logs it.
        console.always(f"serving {server.url_with_token} (stream {server.url}stream, stats {server.url}stats)")
    if plan.events:
        sinks.append(EventsSink(plan.events))  # also takes the stages' events (CLIP's), as a ROS --out does
    return sinks, window


class _Progress:
    """A pipeline subscriber: the periodic progress line and the --stats file while running."""

    def __init__(self, args: argparse.Namespace, plan: OutputPlan, console: "_Console", stats: Any) -> None:
        self.interval, self.plan, self.console, self.stats = args.stats_interval, plan, console, stats
        self._last_print = time.perf_counter()

    def __call__(self, result: Any) -> None:
        now = time.perf_counter()
        if self.interval and now - self._last_print >= self.interval:
            self._last_print = now
            self.console.say(self.stats.progress_line())
            if self.plan.stats:
                _write_stats(Path(self.plan.stats), {**self.stats.summary(), "complete": False})


def build_stages(args: argparse.Namespace, ctx: Any) -> List[Any]:
    """Every registered stage that this run asks for, in pipeline order (closed here if one fails)."""
    from runtime.stages import registered

    stages: List[Any] = []
    try:
        for factory in registered():
            stage = factory.from_args(args, ctx)
            if stage is not None:
                stages.append(stage)
    except BaseException:
        _close_all(reversed(stages), _Console(quiet=True))
        raise
    return stages


def _close_all(things: Any, console: "_Console") -> None:
    for thing in things:
        try:
            thing.close()
        except Exception as exc:  # noqa: BLE001 - close the others regardless
            console.warn(f"closing {thing.describe()} failed: {exc}")


def first_run_build(args: argparse.Namespace):
    """What edge-mm-run may build when no engine matches (see runtime.backends.select), or None for --no-build."""
    from runtime.backends.select import FirstRunBuild

    if args.no_build or args.backend in ("ort-cpu", "ort-cuda"):
        return None
    return FirstRunBuild(target_sm=args.target_sm)


def run(args: argparse.Namespace, config_source_options: Dict[str, Any]) -> int:
    from edge_mm.outputs import WrittenCheck
    from runtime.memory import keep_freed_memory
    from runtime.pipeline import Pipeline, StopSignals
    from runtime.sinks.video import VideoSink
    from runtime.sinks.window import Controls
    from runtime.sources import open_source, parse_source_uri
    from runtime.stages import AssemblyContext
    from runtime.stats import PipelineStats, format_summary
    from runtime.threads import set_thread_tuning, thread_tuning

    console = _Console(args.quiet)
    logging.basicConfig(level=logging.WARNING, format="warning: %(message)s")
    keep_freed_memory()  # frame-sized temporaries reuse their pages instead of faulting in new ones
    path = model_dir(args)
    # Every output, the CLIP artifact and the model are checked before a camera is opened.
    plan = plan_outputs(args, console)
    written_check = WrittenCheck([plan.out, plan.events, plan.stats])
    if getattr(args, "clip", None):
        from edge_mm.artifact_kind import require_artifact

        require_artifact(args.clip, "--clip", "clip", "clip-demo")
    open_artifact(path)  # a missing or broken model fails before a camera is opened

    # One SIGINT/SIGTERM handler for the whole run: setup is cut short, the frame loop stops between frames.
    with StopSignals() as signals:
        uri = resolve_camera(args.camera, console.say)
        kind, _ = parse_source_uri(uri)
        frames = args.frames
        if frames is None and kind == "synthetic" and not args.loop:
            frames = DEFAULT_SYNTHETIC_FRAMES
            console.say(f"frames: {frames} synthetic scenes (--frames N to change, --loop to run until stopped)")
        source = open_source(uri, **source_options(args, uri, config_source_options, frames))
        if getattr(source, "summary", ""):
            console.say(source.summary)
        stages: List[Any] = []
        sinks: List[Any] = []
        stats = PipelineStats()
        outcome = pipeline = None
        tuning_before = thread_tuning()
        try:
            ctx = AssemblyContext(
                say=console.say,
                warn=console.warn,
                open_artifact=open_artifact,
                model_path=path,
                source_name=source.name,
                source_live=bool(source.live),
                # Backend selection prints each backend's line and may build an engine on first run.
                backend_options={"say": console.say, "build": first_run_build(args)},
            )
            stages = build_stages(args, ctx)
            info: Dict[str, Any] = {}
            for stage in stages:
                info.update(stage.info())
            backend_kind = info.pop("backend_kind", None)
            out_fps = args.out_fps or float(getattr(source, "fps", None) or 30.0)
            stats.info = {**info, "source": source.name, "live": bool(source.live), "out_fps": out_fps}
            stats.info["stages"] = [stage.name for stage in stages]
            controls = Controls(show_heatmap=not args.no_overlay)
            title = f"{info.get('model', 'edge-mm-run')} on {source.name}"
            sinks, window = open_sinks(args, plan, console, stats, controls, title, stages)
            stats.info["outputs"] = [s.describe() for s in sinks] + ([f"stats {plan.stats}"] if plan.stats else [])
            set_thread_tuning(not args.even_threads)  # process-wide: the video sinks' encoders follow it
            pipeline = Pipeline(
                source,
                stages,
                sinks,
                stats,
                max_frames=frames,
                workers=args.workers or (1 if backend_kind == "ort-cpu" else 2),
                controls=controls,
                render_lines=lambda: stats.overlay_lines()[:2],
                on_result=_Progress(args, plan, console, stats),
                idle=(lambda: window.poll(30)) if window else None,
                snapshot_dir=plan.snapshot_dir,
                make_recording=lambda: VideoSink(
                    plan.snapshot_dir / time.strftime("record-%Y%m%d-%H%M%S.mp4"), fps=out_fps
                ),
                announce=console.always,
                signals=signals,
            )
            for stage in stages:
                alone = stage.measure_alone()
                if alone is not None:  # the pipeline's model: the stage whose inference sets its pace
                    stats.model_alone = alone
                    console.say(
                        f"model alone: {alone['fps']:.1f} FPS ({alone['median_ms']:.1f} ms median of {alone['runs']} runs)"
                    )
                    break
            console.say(
                f"running: {source.name} -> {', '.join(stats.info['outputs']) or 'nothing'} "
                f"({'live, newest frame' if source.live else 'every frame once'}; Ctrl-C stops)"
            )
            outcome = pipeline.run()
        finally:
            _close_all(reversed(stages), console)  # CLIP stops before its events are summed up
            if pipeline is not None:
                pipeline.flush_events()  # what a stage's own thread finished after the last frame
            _close_all((pipeline.sinks if pipeline is not None else sinks), console)
            source.close()
            set_thread_tuning(tuning_before)
            if outcome is not None:
                summary = {
                    **stats.summary(),
                    "complete": True,
                    "stop_reason": outcome.reason,
                    "error": str(outcome.error) if outcome.error else None,
                }
                for stage in stages:
                    part = stage.summary()
                    if part is not None:
                        summary[stage.name] = part
                if plan.stats:
                    _write_stats(Path(plan.stats), summary)

    console.always(f"stopped ({outcome.reason}): " + format_summary(summary))
    written = written_check.written()
    if written:
        console.always("wrote: " + ", ".join(written))
    if outcome.error is not None:
        raise outcome.error
    for stage in stages:
        stage.raise_if_failed()
    return interrupt_exit_code() if outcome.interrupted else 0


def _main(argv: Optional[Sequence[str]]) -> int:
    args, config_source_options = parse_args(argv)
    if args.print_config:
        from runtime.config import to_toml

        values = {k: v for k, v in vars(args).items() if k not in ("print_config", "config")}
        values["model"] = str(model_dir(args))
        print(to_toml(values, config_source_options), end="")
        return 0
    return run(args, config_source_options)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Console entry point (`edge-mm-run`): returns the exit status (2 with one line for user errors)."""
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
