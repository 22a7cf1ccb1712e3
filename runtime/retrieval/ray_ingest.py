"""Embed image files on a Ray cluster with Ray Data; this process stays the index's only writer (torch-free).

    edge-mm-index add --ray auto --model artifacts/clip-demo --index idx photos/

The driver (this process) reads and hashes each file, skips content hashes the index holds before
anything is sent, and hands the bytes to Ray Data. `map_batches` runs `EmbedActor`: each actor
opens the artifact's image graph once (select_backend: a TensorRT engine where the worker has one
and a GPU, ONNX Runtime on CPU workers), then decodes, preprocesses and embeds batches and makes
the thumbnails. Vectors stream back (`iter_batches`, order preserved, so ids match the local
path) and are committed batch by batch by the one IndexStore writer here: a killed driver loses at
most the batches in flight, and rerunning skips what was committed. File bytes travel with the
work, so workers need no shared filesystem.

Ray Data's API moved: `concurrency=` replaced `compute=ActorPoolStrategy(...)` in 2.9 and recent
releases deprecate `concurrency` again; `actor_pool_kwargs` picks what the installed Ray accepts.
"""

from __future__ import annotations

import inspect
import logging
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import numpy as np

from edge_mm.errors import BackendError, UsageError
from runtime.retrieval.ingest import IngestOptions, IngestReport, Target, sha256_bytes
from runtime.retrieval.store import IndexStore

log = logging.getLogger("edge_mm.runtime.ray_ingest")

RAY_INSTALL = "pip install 'edge-mm[ray]'"


def import_ray() -> Any:
    try:
        import ray  # noqa: PLC0415 - optional: only `add --ray` needs it
        import ray.data  # noqa: F401, PLC0415
    except ImportError:
        raise BackendError(f"--ray needs Ray Data: {RAY_INSTALL} (or run add without --ray)") from None
    return ray


def actor_pool_kwargs(size: int, style: str = "auto", map_batches: Optional[Callable] = None) -> Dict[str, Any]:
    """map_batches keyword arguments for a pool of `size` actors, in the form this Ray accepts.

    style "auto" prefers compute=ActorPoolStrategy (current Ray) and falls back to concurrency=
    (2.9-2.x releases that lack it); "compute" or "concurrency" force one (tests use both).
    """
    ray = import_ray()
    if size < 1:
        raise UsageError(f"the Ray actor pool needs at least 1 actor, got {size}")
    params = inspect.signature(map_batches or ray.data.Dataset.map_batches).parameters
    strategy = getattr(ray.data, "ActorPoolStrategy", None)
    can_compute = "compute" in params and strategy is not None
    if style == "compute" or (style == "auto" and can_compute):
        if not can_compute:
            raise UsageError("this Ray has no compute=ActorPoolStrategy; use style 'concurrency'")
        return {"compute": strategy(size=size)}
    if style in ("concurrency", "auto") and "concurrency" in params:
        return {"concurrency": size}
    raise UsageError(f"cannot make an actor pool with this Ray ({ray.__version__}) in style {style!r}")


def check_ray_targets(targets: Sequence[Target], saliency: bool) -> None:
    """--ray takes image files and folders only (videos and RGB-D sources are read in one process)."""
    not_images = [t.text for t in targets if t.kind != "images"]
    if not_images:
        raise UsageError(
            f"--ray indexes image files and folders, not {', '.join(not_images)}; add videos and recordings without --ray"
        )
    if saliency:
        raise UsageError("--saliency applies to RGB-D sources, which --ray does not take; drop one of the two")


class EmbedActor:
    """One Ray actor: the CLIP image graph opened once, then batches of file bytes -> vectors and thumbnails."""

    def __init__(self, artifact: str, backend: str, precision: str, threads: Optional[int], batch_size: int) -> None:
        from runtime.retrieval.embed import ClipEmbedder

        self.embedder = ClipEmbedder.open(
            artifact, backend=backend, precision=precision, threads=threads, batch_size=batch_size, text="no"
        )

    def __call__(self, batch: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        import cv2

        from runtime.retrieval.thumbnail import make_thumbnail

        images = [cv2.imdecode(np.frombuffer(bytes(data), np.uint8), cv2.IMREAD_COLOR) for data in batch["data"]]
        ok = np.array([im is not None for im in images], dtype=bool)
        good = [im for im in images if im is not None]
        vectors = self.embedder.embed_images(good)
        out = np.zeros((len(images), self.embedder.dim), dtype=np.float32)
        out[ok] = vectors
        return {
            "content_hash": batch["content_hash"],
            "path": batch["path"],
            "ok": ok,
            "vector": out,
            "width": np.array([im.shape[1] if im is not None else 0 for im in images], dtype=np.int64),
            "height": np.array([im.shape[0] if im is not None else 0 for im in images], dtype=np.int64),
            "thumbnail": np.array([make_thumbnail(im) if im is not None else b"" for im in images], dtype=object),
        }


class RayIngest:
    """Like runtime.retrieval.ingest.Ingest for image targets, with the embedding done on Ray."""

    def __init__(
        self,
        artifact: Path,
        store: IndexStore,
        options: IngestOptions,
        address: str = "auto",
        backend: str = "auto",
        precision: str = "auto",
        threads: Optional[int] = None,
        actors: Optional[int] = None,
        gpus_per_actor: float = 0.0,
        pool_style: str = "auto",
        say: Callable[[str], None] = print,
    ) -> None:
        self.ray = import_ray()
        self.artifact = str(Path(artifact).resolve())
        self.store = store
        self.options = options
        self.address = address
        self.backend, self.precision, self.threads = backend, precision, threads
        self.actors = actors
        self.gpus_per_actor = float(gpus_per_actor)
        self.pool_style = pool_style
        self.say = say
        self.report = IngestReport()
        self.sent = 0  # items handed to Ray (after the skip of what is indexed)

    def _connect(self) -> bool:
        """Connect (or start a local Ray); True if this call started the connection and must end it."""
        if self.ray.is_initialized():
            return False
        kwargs: Dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
        if self.address != "auto":
            kwargs["address"] = self.address
        try:
            self.ray.init(**kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise BackendError(
                f"cannot reach the Ray cluster at {self.address!r} ({exc}); check the address or use --ray auto"
            ) from None
        return True

    def _work(self, targets: Sequence[Target]) -> Iterator[Dict[str, Any]]:
        """File bytes to embed: what the index lacks, each content hash once."""
        queued = set()
        for target in targets:
            for path in target.files:
                self.report.seen += 1
                try:
                    data = path.read_bytes()
                except OSError as exc:
                    log.warning("cannot read %s (%s); skipped", path, exc.strerror)
                    self.report.unreadable += 1
                    continue
                content_hash = sha256_bytes(data)
                if content_hash in queued or self.store.has(content_hash):
                    self.report.skipped += 1
                    continue
                queued.add(content_hash)
                yield {"content_hash": content_hash, "path": str(path), "data": data}

    def run(self, targets: Sequence[Target]) -> IngestReport:
        """Index every image target; KeyboardInterrupt is recorded (report.interrupted) after the last commit."""
        check_ray_targets(targets, self.options.cropper is not None)
        started = time.perf_counter()
        self.report.targets = [t.text for t in targets]
        work = list(self._work(targets))
        self.sent = len(work)
        if not work:
            self.report.seconds = time.perf_counter() - started
            return self.report
        started_ray = self._connect()
        try:
            self._embed_and_commit(work)
        except KeyboardInterrupt:
            self.report.interrupted = True
        finally:
            if started_ray:
                self.ray.shutdown()
            self.report.seconds = time.perf_counter() - started
        return self.report

    def _embed_and_commit(self, work: List[Dict[str, Any]]) -> None:
        from tqdm import tqdm

        data = self.ray.data
        context = data.DataContext.get_current()
        context.execution_options.preserve_order = True  # same ids as the local path
        context.enable_progress_bars = False  # ours counts commits, which is what a resume keeps
        batch = self.options.batch_size
        actors = self.actors or max(1, int(self.ray.cluster_resources().get("CPU", 1)))
        actors = min(actors, -(-len(work) // batch))
        ds = data.from_items(work, override_num_blocks=max(1, -(-len(work) // batch)))
        ds = ds.map_batches(
            EmbedActor,
            batch_size=batch,
            batch_format="numpy",
            fn_constructor_kwargs=dict(
                artifact=self.artifact,
                backend=self.backend,
                precision=self.precision,
                threads=self.threads or 1,
                batch_size=batch,
            ),
            num_cpus=1,
            num_gpus=self.gpus_per_actor or None,
            **actor_pool_kwargs(actors, self.pool_style),
        )
        with tqdm(total=len(work), desc="ray embed", unit="img", disable=not self.options.progress) as bar:
            for out in ds.iter_batches(batch_size=batch, batch_format="numpy"):
                self._commit(out)
                bar.update(len(out["ok"]))

    def _commit(self, out: Dict[str, np.ndarray]) -> None:
        ok = np.asarray(out["ok"], dtype=bool)
        for path in np.asarray(out["path"])[~ok]:
            log.warning("%s is not an image OpenCV can decode; skipped", path)
        self.report.unreadable += int((~ok).sum())
        if not ok.any():
            return
        items = [
            {
                "content_hash": str(out["content_hash"][i]),
                "path": str(out["path"][i]),
                "source": "image",
                "extra": {"size": [int(out["width"][i]), int(out["height"][i])]},
                "thumbnail": bytes(out["thumbnail"][i]),
            }
            for i in np.flatnonzero(ok)
        ]
        before = len(self.store)
        self.store.add(np.asarray(out["vector"], dtype=np.float32)[ok], items)
        added = len(self.store) - before
        self.report.added += added
        self.report.skipped += len(items) - added
