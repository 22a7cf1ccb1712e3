"""`edge-mm-index add` throughput: one process (ONNX Runtime) against Ray Data actors, side by side.

    python bench/bench_ray_ingest.py [--artifact artifacts/clip-demo] [--images 256] [--actors 2]
        [--json bench/results/ray_ingest.json]

Both paths index the same folder of synthetic 480x640 JPEG scenes into a fresh index with the same
CLIP artifact on ONNX Runtime CPU (default: the demo CLIP, exported into a scratch folder first):

- local: runtime.retrieval.ingest.Ingest, decode + preprocess + embed in this process with
  --threads ONNX Runtime threads;
- ray: runtime.retrieval.ray_ingest.RayIngest on a local Ray started here with --actors CPUs, one
  ONNX Runtime thread per actor, this process writing. Reported with and without Ray's start-up
  (ray.init), and always including the actors' model load, which a real run pays too.

The ratio is ray / local images per second. On a 2-core machine no gain is expected: the actors
compete with the driver and with each other for the same two cores.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_mm.atomic import write_json  # noqa: E402
from edge_mm.cli_support import run_cli  # noqa: E402


def demo_artifact(workdir: Path) -> Path:
    from export.build_engine import main as build

    out = workdir / "clip-demo"
    code = build(["--model", "clip-demo", "--out", str(out), "--no-engine", "--precision", "fp32"])
    if code != 0:
        raise SystemExit(f"exporting the demo CLIP failed (exit {code})")
    return out


def write_images(folder: Path, count: int) -> None:
    import cv2

    from edge_mm.synthetic import SceneGenerator

    folder.mkdir(parents=True)
    generator = SceneGenerator((480, 640), seed=3)
    for i in range(count):
        cv2.imwrite(str(folder / f"scene_{i:04d}.jpg"), generator.generate(i).bgr)


def run_local(artifact: Path, images: Path, index: Path, threads: int, batch: int) -> Dict[str, Any]:
    from runtime.retrieval.artifact_note import clip_identity
    from runtime.retrieval.embed import ClipEmbedder
    from runtime.retrieval.ingest import Ingest, IngestOptions, resolve_target
    from runtime.retrieval.store import IndexStore

    paths, model = clip_identity(artifact)
    start = time.perf_counter()
    with ClipEmbedder.open(artifact, backend="ort-cpu", threads=threads, batch_size=batch, text="no") as embedder:
        with IndexStore(index, dim=embedder.dim, model_info=model, mode="a") as store:
            report = Ingest(embedder, store, IngestOptions(batch_size=batch, progress=False)).run(
                [resolve_target(str(images))]
            )
    seconds = time.perf_counter() - start
    return {"added": report.added, "seconds": seconds, "images_per_s": report.added / seconds}


def run_ray(artifact: Path, images: Path, index: Path, actors: int, batch: int) -> Dict[str, Any]:
    import ray

    from runtime.retrieval.artifact_note import clip_identity
    from runtime.retrieval.ingest import IngestOptions, resolve_target
    from runtime.retrieval.ray_ingest import RayIngest
    from runtime.retrieval.store import IndexStore

    paths, model = clip_identity(artifact)
    t0 = time.perf_counter()
    ray.init(num_cpus=actors, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    init_s = time.perf_counter() - t0
    try:
        start = time.perf_counter()
        with IndexStore(index, dim=_dim(artifact), model_info=model, mode="a") as store:
            report = RayIngest(
                artifact,
                store,
                IngestOptions(batch_size=batch, progress=False),
                backend="ort-cpu",
                threads=1,
                actors=actors,
            ).run([resolve_target(str(images))])
        seconds = time.perf_counter() - start
    finally:
        ray.shutdown()
    return {
        "added": report.added,
        "seconds": seconds,
        "ray_init_s": init_s,
        "images_per_s": report.added / seconds,
        "images_per_s_with_init": report.added / (seconds + init_s),
    }


def _dim(artifact: Path) -> int:
    from edge_mm.artifact import Artifact
    from runtime.retrieval.embed import _embed_dim, locate_clip_artifact

    return _embed_dim(Artifact(locate_clip_artifact(artifact).image).spec)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--artifact", type=Path, help="CLIP artifact (default: export the demo CLIP to a scratch folder)")
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--actors", type=int, default=2, help="Ray CPUs (one actor each)")
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads of the local path")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--json", type=Path, default=Path(__file__).resolve().parent / "results" / "ray_ingest.json")
    args = p.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="edge-mm-bench-ray-"))
    try:
        artifact = args.artifact or demo_artifact(workdir)
        write_images(workdir / "images", args.images)
        local = run_local(artifact, workdir / "images", workdir / "idx-local", args.threads, args.batch)
        print(f"local: {local['added']} images in {local['seconds']:.1f} s = {local['images_per_s']:.1f} img/s")
        remote = run_ray(artifact, workdir / "images", workdir / "idx-ray", args.actors, args.batch)
        print(
            f"ray ({args.actors} actors): {remote['added']} images in {remote['seconds']:.1f} s = "
            f"{remote['images_per_s']:.1f} img/s ({remote['images_per_s_with_init']:.1f} with ray.init "
            f"{remote['ray_init_s']:.1f} s)"
        )
        ratio = remote["images_per_s"] / local["images_per_s"]
        print(f"ray / local = {ratio:.2f} on {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
        result = {
            "artifact": str(artifact),
            "images": args.images,
            "actors": args.actors,
            "local_threads": args.threads,
            "batch": args.batch,
            "cores": os.cpu_count(),
            "loadavg_1min_end": os.getloadavg()[0],
            "local": local,
            "ray": remote,
            "ray_over_local": ratio,
        }
        write_json(args.json, result, indent=1)
        print(f"wrote {args.json}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
