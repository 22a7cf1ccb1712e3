"""What 20 browsers watching the stream cost the pipeline: FPS with and without viewers, side by side.

    python bench/bench_web.py --model artifacts/cdinet-s [--seconds 10] [--clients 20] [--rounds 3]
                              [--size 640x480] [--json bench/results/web.json]

One process runs the pipeline (synthetic scenes, headless, the web page as its only output, bound
to 127.0.0.1); a second process plays the viewers, so their reading costs the pipeline no GIL
time: `--clients` MJPEG streams read as fast as they come, and /health asked every 0.2 s. Each
round runs, for `--seconds` each, the pipeline with no viewer and then with the viewers, in two
modes: camera-like (scenes paced at 30 FPS, what a RealSense gives) and unpaced (as fast as the
pipeline goes, where any cost of serving shows). Reported: median FPS per row, the ratio
with/without viewers, frames the viewers received, health checks answered and failed. Timings are
printed and written, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_mm.artifact import Artifact  # noqa: E402
from edge_mm.atomic import write_json  # noqa: E402
from runtime.backends.select import select_backend  # noqa: E402
from runtime.pipeline import Pipeline  # noqa: E402
from runtime.saliency import SaliencyModel  # noqa: E402
from runtime.sinks.window import Controls  # noqa: E402
from runtime.sources import open_source  # noqa: E402
from runtime.stages.saliency import SaliencyStage  # noqa: E402
from runtime.stats import PipelineStats  # noqa: E402
from runtime.web.live import LiveView  # noqa: E402

VIEWERS = r"""
import http.client, json, sys, threading, time, urllib.request
port, clients, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
frames = [0] * clients
health = {"ok": 0, "failed": 0}
stop = time.monotonic() + seconds
def view(i):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/stream")
    r = conn.getresponse()
    while time.monotonic() < stop:
        line = r.fp.readline()
        if not line:
            return
        if line.lower().startswith(b"content-length:"):
            n = int(line.split(b":")[1]); r.fp.readline(); r.fp.read(n); frames[i] += 1
def poll():
    while time.monotonic() < stop:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5).read(); health["ok"] += 1
        except OSError:
            health["failed"] += 1
        time.sleep(0.2)
threads = [threading.Thread(target=view, args=(i,), daemon=True) for i in range(clients)] + [threading.Thread(target=poll)]
print("ready", flush=True)
for t in threads: t.start()
threads[-1].join()
print(json.dumps({"frames": frames, "health": health}), flush=True)
"""


def run_once(model: Any, size, paced: bool, seconds: float, clients: int) -> Dict[str, Any]:
    stats = PipelineStats()
    controls = Controls()
    view = LiveView("127.0.0.1", 0, stats=stats, controls=controls, title="bench")
    source = open_source("synthetic:4", size=(size[1], size[0]), **({"fps": 30.0} if paced else {}))
    viewers = None
    try:
        if clients:
            viewers = subprocess.Popen(
                [sys.executable, "-c", VIEWERS, str(view.server.port), str(clients), str(seconds + 2)],
                stdout=subprocess.PIPE,
                text=True,
            )
            assert viewers.stdout.readline().strip() == "ready"
            deadline = time.monotonic() + 20
            while view.frames.clients < clients and time.monotonic() < deadline:
                view.frames.offer(_blank(size))  # a frame for the viewers to connect to
                time.sleep(0.05)
        timer = threading.Timer(seconds, lambda: setattr(controls, "quit", True))
        timer.start()
        Pipeline(source, [SaliencyStage(model, label="bench")], [view], stats, controls=controls).run()
        timer.cancel()
        out: Dict[str, Any] = {"fps": stats.summary()["fps"], "frames": stats.frames}
        if viewers is not None:
            result = json.loads(viewers.stdout.readline())
            viewers.wait(30)
            out.update(
                viewer_frames=sum(result["frames"]), min_viewer_frames=min(result["frames"]), health=result["health"]
            )
        return out
    finally:
        view.close()
        source.close()
        if viewers is not None and viewers.poll() is None:
            viewers.kill()


def _blank(size):
    import numpy as np

    return np.zeros((size[1], size[0], 3), np.uint8)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a CDINet artifact folder")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    selection = select_backend(Artifact(args.model), "auto", "auto", threads=args.threads)
    rows: Dict[str, List[Dict[str, Any]]] = {}
    with selection.backend:
        model = SaliencyModel(selection.backend)
        model.warm_up()
        for round_ in range(args.rounds):
            for paced in (True, False):
                mode = "camera 30 FPS" if paced else "unpaced"
                for clients in (0, args.clients):
                    row = run_once(model, size, paced, args.seconds, clients)
                    rows.setdefault(f"{mode}, {clients} viewers", []).append(row)
                    print(f"round {round_ + 1} {mode:13s} {clients:2d} viewers: {json.dumps(row)}", flush=True)
    summary: Dict[str, Any] = {}
    for mode in ("camera 30 FPS", "unpaced"):
        alone = statistics.median(r["fps"] for r in rows[f"{mode}, 0 viewers"])
        watched = rows[f"{mode}, {args.clients} viewers"]
        with_viewers = statistics.median(r["fps"] for r in watched)
        summary[mode] = {
            "fps_no_viewers": round(alone, 2),
            f"fps_{args.clients}_viewers": round(with_viewers, 2),
            "ratio": round(with_viewers / alone, 4),
            "viewer_frames_min": min(r["min_viewer_frames"] for r in watched),
            "health_ok": sum(r["health"]["ok"] for r in watched),
            "health_failed": sum(r["health"]["failed"] for r in watched),
        }
        s = summary[mode]
        print(
            f"{mode}: {s['fps_no_viewers']:.1f} FPS alone, {with_viewers:.1f} FPS with {args.clients} viewers "
            f"(ratio {s['ratio']:.3f}); every viewer got >= {s['viewer_frames_min']} frames per run; "
            f"/health {s['health_ok']} answered, {s['health_failed']} failed"
        )
    if args.json:
        write_json(
            args.json,
            {
                "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cores",
                "backend": selection.label,
                "model": args.model,
                "size": args.size,
                "seconds": args.seconds,
                "clients": args.clients,
                "summary": summary,
                "rounds": rows,
            },
            indent=2,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
