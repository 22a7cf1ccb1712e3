"""`edge-mm-index`: build and search a CLIP embedding index on the device (torch-free).

    edge-mm-index add --model artifacts/clip-demo --index idx photos/ clip.mp4 recording:run.bag
    edge-mm-index add --model artifacts/clip-demo --index idx recording:run.bag --saliency artifacts/cdinet-s
    edge-mm-index search --index idx "a red mug" -k 5
    edge-mm-index search --index idx --image query.jpg --json
    edge-mm-index add --ray auto --model artifacts/clip-demo --index idx photos/
    edge-mm-index remove --index idx --path '/data/old/*' --before 2026-12-01T00:00
    edge-mm-index compact --index idx
    edge-mm-index info --index idx
    edge-mm-index serve --index idx --model artifacts/clip-demo      # the search page at http://127.0.0.1:8090/

`add` embeds images, video frames (at --fps) and RGB-D recordings or cameras (optionally cut to
the salient object with --saliency), in batches with a progress bar; what is indexed already
(same content hash) is skipped, and Ctrl-C keeps every committed batch: run the command again to
resume. An index remembers the model that made it; adding or searching with another model is an
error. It also remembers the artifact folder, so `search` needs --model only if that folder moved.

`search` uses the HNSW graph (runtime/retrieval/ann.py) once the index holds ANN_MIN_ROWS items,
exact search below that; --exact forces exact search. `add` keeps an existing graph (or one the
index is now large enough for) up to date. `remove` tombstones items (searches skip them at
once); `compact` reclaims their space, building the index anew aside and renaming it in.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from edge_mm.cli_support import CliParser, install_sigterm_handler, interrupt_exit_code, non_negative_number, run_cli
from edge_mm.errors import BackendError, IndexStoreError, InputError, UsageError
from edge_mm.outputs import OutputKind, check_output, folder_holding
from runtime.retrieval.artifact_note import artifact_for_index, clip_identity, remember_artifact, remembered_artifact
from runtime.retrieval.crop import DEFAULT_PAD
from runtime.retrieval.store import META_FILE, VECTORS_FILE, add_command

# An existing --index must be an index (or an empty folder): anything else is not ours to add to.
INDEX_FOLDER = OutputKind("an edge-mm-index index", folder_holding(META_FILE, VECTORS_FILE), folder=True)

BACKEND_CHOICES = ("auto", "tensorrt", "ort-cuda", "ort-cpu")
PRECISION_CHOICES = ("auto", "fp32", "fp16", "int8")
FAISS_KINDS = ("flat", "flat-fp16", "ivf-flat", "hnsw")


def existing_index(text: str) -> Path:
    """--index of search and info: an index folder, or one line saying what is there instead."""
    from edge_mm.artifact_kind import path_kind

    found = path_kind(text)
    if found.kind == "missing":
        raise IndexStoreError(f"no retrieval index at {found.path}; build one with `{add_command(found.path)}`")
    if found.kind != "index":
        raise IndexStoreError(
            f"--index {found.path} is {found.describe()}, not a retrieval index; give a folder made by edge-mm-index add"
        )
    return found.path


# --------------------------------------------------------------------------- add


def _targets(texts: Sequence[str]):
    from runtime.retrieval.ingest import resolve_target

    targets = [resolve_target(t) for t in texts]
    seen = set()
    unique = []
    for t in targets:
        key = (t.kind, t.path, t.files, t.text if t.kind == "source" and t.path is None else "")
        if key not in seen:
            seen.add(key)
            unique.append(t)
    return unique


def cmd_add(args: argparse.Namespace) -> int:
    from runtime.retrieval.embed import ClipEmbedder
    from runtime.retrieval.ingest import Ingest, IngestOptions, SalientCropper, check_targets
    from runtime.retrieval.store import IndexStore

    if args.fps < 0:
        raise UsageError(f"--fps {args.fps} must be >= 0 (0 = every frame)")
    if args.max_frames is not None and args.max_frames < 1:
        raise UsageError(f"--max-frames {args.max_frames} must be >= 1")
    if args.batch < 1:
        raise UsageError(f"--batch {args.batch} must be >= 1")
    if args.ray is not None:
        from runtime.retrieval.ray_ingest import import_ray

        if args.ray_actors is not None and args.ray_actors < 1:
            raise UsageError(f"--ray-actors {args.ray_actors} must be >= 1")
        if not args.ray_gpus >= 0:
            raise UsageError(f"--ray-gpus {args.ray_gpus} must be >= 0")

        import_ray()  # the one-line install hint before anything else happens
    if not args.pad >= 0:
        raise UsageError(f"--pad {args.pad} must be >= 0")
    targets = _targets(args.targets)
    check_targets(targets, args.max_frames)
    if args.ray is not None:
        from runtime.retrieval.ray_ingest import check_ray_targets

        check_ray_targets(targets, args.saliency is not None)
    index_path = Path(args.index)
    check_output(index_path, "--index", INDEX_FOLDER)
    if args.saliency:
        from edge_mm.artifact_kind import require_artifact

        # Before the index is created: a wrong --saliency must not leave an empty index behind.
        require_artifact(args.saliency, "--saliency", "saliency", "cdinet-s")
    artifact = artifact_for_index(index_path, args.model) if index_path.exists() else args.model
    if artifact is None:
        raise UsageError("pass --model CLIP_ARTIFACT: a new index needs the model that embeds it")
    paths, model_info = clip_identity(Path(artifact))
    # SIGTERM ends an add like Ctrl-C: the batch in flight is dropped, committed ones stay.
    previous = install_sigterm_handler()
    embedder = cropper = store = None
    report = None
    try:
        store = IndexStore(index_path, dim=_dim_of(paths), model_info=model_info, mode="a")
        remember_artifact(index_path, paths.root, model_info)
        if args.ray is None:  # with --ray the actors open the model; this process only writes
            embedder = ClipEmbedder.open(
                paths.root,
                backend=args.backend,
                precision=args.precision,
                threads=args.threads,
                batch_size=args.batch,
                text="no",
            )
        if args.saliency:
            cropper = SalientCropper.open(
                args.saliency,
                args.backend,
                args.precision,
                args.threads,
                threshold=args.saliency_threshold,
                pad=args.pad,
            )
        progress = not args.no_progress and not args.json
        say = (lambda text: print(text, file=sys.stderr)) if args.json else print
        if not args.json:
            using = embedder.description if embedder is not None else f"Ray ({args.ray})"
            print(f"adding to {index_path} ({len(store)} items) with {using}")
        options = IngestOptions(
            fps=args.fps, max_frames=args.max_frames, cropper=cropper, batch_size=args.batch, progress=progress
        )
        if args.ray is not None:
            from runtime.retrieval.ray_ingest import RayIngest

            report = RayIngest(
                paths.root,
                store,
                options,
                address=args.ray,
                backend=args.backend,
                precision=args.precision,
                threads=args.threads,
                actors=args.ray_actors,
                gpus_per_actor=args.ray_gpus,
                say=say,
            ).run(targets)
        else:
            report = Ingest(embedder, store, options, say=say).run(targets)
        if not report.interrupted:
            _update_graph(store, progress)
        total = len(store)
    except KeyboardInterrupt:
        total = len(store) if store is not None else 0
        print(
            f"interrupted; index {index_path} holds {total} items (run the same command again to resume)",
            file=sys.stderr,
        )
        return interrupt_exit_code()
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        for thing in (cropper, embedder, store):
            if thing is not None:
                thing.close()
    if args.json:
        print(json.dumps(dict(report.to_dict(), index=str(index_path), items=total), sort_keys=True))
    else:
        print(f"{report.line()}; index {index_path} holds {total} items")
    if report.interrupted:
        print("interrupted: every committed batch is kept; run the same command again to resume", file=sys.stderr)
        return interrupt_exit_code()
    return 0


def _update_graph(store: Any, progress: bool) -> None:
    """Extend the saved search graph with what was added (build it once the index is large enough)."""
    from runtime.retrieval import ANN_MIN_ROWS
    from runtime.retrieval.ann import graph_path, import_usearch

    if len(store) < ANN_MIN_ROWS and not graph_path(store).is_file():
        return
    try:
        import_usearch()
    except BackendError:
        return  # searches fall back to exact search without usearch; nothing to keep up to date
    from runtime.retrieval.ann import GraphIndex

    GraphIndex(store, progress=progress)


def _dim_of(paths) -> int:
    from edge_mm.artifact import Artifact
    from runtime.retrieval.embed import _embed_dim

    return _embed_dim(Artifact(paths.image).spec)


# --------------------------------------------------------------------------- search


def _describe_hit(hit: Dict[str, Any]) -> str:
    where = hit["path"]
    if hit.get("frame_time") is not None:
        where += f" @ {hit['frame_time']:.2f} s"
    if hit.get("box") is not None:
        where += " box [" + ", ".join(f"{v:g}" for v in hit["box"]) + "]"
    return where


def _read_queries(path: Path) -> List[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read --queries {path} ({exc}); give a UTF-8 text file, one query per line") from None
    queries = [line.strip() for line in lines if line.strip()]
    if not queries:
        raise UsageError(f"--queries {path} holds no queries; write one text query per line")
    return queries


def cmd_search(args: argparse.Namespace) -> int:
    import cv2

    from runtime.retrieval import open_search_index
    from runtime.retrieval.embed import ClipEmbedder
    from runtime.retrieval.store import IndexStore

    given = [x for x in (args.query, args.image, args.queries) if x is not None]
    if len(given) != 1:
        raise UsageError('give one of: a text query ("a red mug"), --image FILE or --queries FILE')
    if args.k < 1:
        raise UsageError(f"-k {args.k} must be >= 1")
    index_path = existing_index(args.index)
    texts = (
        [args.query] if args.query is not None else (_read_queries(args.queries) if args.queries is not None else [])
    )
    image = None
    if args.image is not None:
        # Checked first: OpenCV's imread logs its own [ WARN ] line for a missing file.
        image = cv2.imread(str(args.image), cv2.IMREAD_COLOR) if args.image.is_file() else None
        if image is None:
            raise InputError(f"--image {args.image} is missing or not an image OpenCV can read")
    if args.exact and args.faiss:
        raise UsageError("--exact and --faiss exclude each other; pick one")
    paths, model_info = clip_identity(artifact_for_index(index_path, args.model))
    answers = []
    # Opening the store with the CLIP model's identity is the check that the index was made by it.
    with IndexStore(index_path, model_info=model_info, mode="r") as store:
        with ClipEmbedder.open(
            paths.root,
            backend=args.backend,
            precision=args.precision,
            threads=args.threads,
            text="no" if image is not None else "now",
        ) as embedder:
            queries = embedder.embed_images([image]) if image is not None else embedder.embed_texts(texts)
            described = embedder.description
        backend = "faiss" if args.faiss else "exact" if args.exact else "auto"
        searcher = open_search_index(store, backend, **({"kind": args.faiss} if args.faiss else {}))
        backend = searcher.name if backend != "faiss" else f"faiss-{args.faiss}"
        scores, ids = searcher.search(queries, args.k)
        for row in range(len(queries)):
            found = [(float(s), int(i)) for s, i in zip(scores[row], ids[row]) if i >= 0]
            hits = store.items([i for _, i in found]) if found else []
            query = {"image": str(args.image)} if image is not None else {"text": texts[row]}
            results = [dict(rank=r + 1, score=round(sc, 6), **hit) for r, ((sc, _), hit) in enumerate(zip(found, hits))]
            answers.append({"query": query, "results": results})
        total = len(store)
    if args.json:
        out: Dict[str, Any] = {
            "index": str(index_path),
            "items": total,
            "model": model_info.name,
            "search": backend,
            "k": args.k,
        }
        if args.queries is not None:
            out["queries"] = answers
        else:
            out.update(answers[0])
        print(json.dumps(out, sort_keys=True))
        return 0
    print(f"{index_path}: {total} items, {described}, {backend} search")
    for answer in answers:
        query = answer["query"]
        print(f'"{query["text"]}"' if "text" in query else f"image {query['image']}")
        if not answer["results"]:
            print("  no results: the index is empty")
        for hit in answer["results"]:
            print(f"  {hit['rank']:>3}  {hit['score']:.4f}  {_describe_hit(hit)}")
    return 0


# --------------------------------------------------------------------------- info


def cmd_info(args: argparse.Namespace) -> int:
    from runtime.retrieval.store import IndexStore

    index_path = existing_index(args.index)
    with IndexStore(index_path, mode="r") as store:
        info = store.info
        out = {
            "index": str(index_path),
            "items": len(store),
            "dim": store.dim,
            "model": {
                "name": store.model_info.name,
                "spec_digest": store.model_info.spec_digest,
                "weights_sha256": store.model_info.weights_sha256,
            },
            "created_at": float(info.get("created_at", "0") or 0),
            "artifact": str(remembered_artifact(index_path) or ""),
            "faiss": sorted(p.name for p in index_path.glob("faiss-*.index")),
            "removed": int(store.deleted_ids().size),
            "live": store.live_count(),
            "graph": sorted(p.name for p in index_path.glob("graph-*.usearch")),
        }
    if args.json:
        print(json.dumps(out, sort_keys=True))
        return 0
    print(f"index {out['index']}: {out['items']} items ({out['removed']} removed), {out['dim']}-d")
    print(
        f"  model {out['model']['name']} (spec {out['model']['spec_digest'][:12]}, weights {out['model']['weights_sha256'][:12] or '?'})"
    )
    print(f"  artifact {out['artifact'] or '(not recorded)'}")
    if out["faiss"]:
        print(f"  faiss {', '.join(out['faiss'])}")
    if out["graph"]:
        print(f"  search graph {', '.join(out['graph'])}")
    return 0


# --------------------------------------------------------------------------- remove, compact


def parse_time(text: str) -> float:
    """Seconds since the epoch from a number or an ISO 8601 time (no zone given: local time)."""
    import datetime

    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise UsageError(
            f"--before {text!r} is not a time; give ISO 8601 (2026-12-01T08:00, 2026-12-01) or seconds since the epoch"
        ) from None


def cmd_remove(args: argparse.Namespace) -> int:
    from runtime.retrieval.store import IndexStore

    if not (args.path or args.before or args.id):
        raise UsageError("say what to remove: --path GLOB, --before TIME and/or --id N ...")
    if args.id and (args.path or args.before):
        raise UsageError("--id names items exactly; do not combine it with --path or --before")
    before = parse_time(args.before) if args.before else None
    index_path = Path(args.index)
    with IndexStore(index_path, mode="r") as probe:
        model = probe.model_info
    with IndexStore(index_path, model_info=model, mode="a") as store:
        ids = list(args.id) if args.id else store.select_ids(path_glob=args.path, before=before)
        removed = store.remove(ids) if ids and not args.dry_run else 0
        out = {
            "index": str(index_path),
            "matched": len(ids),
            "removed": removed,
            "dry_run": bool(args.dry_run),
            "live": store.live_count(),
            "removed_total": int(store.deleted_ids().size),
        }
    if args.json:
        print(json.dumps(out, sort_keys=True))
    elif args.dry_run:
        print(f"would remove {len(ids)} items from {index_path} (dry run: nothing changed)")
    else:
        print(
            f"removed {removed} items from {index_path}; {out['live']} remain searchable "
            f"({out['removed_total']} removed in all: edge-mm-index compact reclaims their space)"
        )
    return 0


def cmd_compact(args: argparse.Namespace) -> int:
    from runtime.retrieval.compact import compact

    index_path = Path(args.index)
    if not index_path.exists():
        from runtime.retrieval.store import IndexStore

        IndexStore(index_path, mode="r")  # finishes an interrupted compact, or says there is no index
    result = compact(index_path, progress=not args.no_progress and not args.json)
    if args.json:
        print(json.dumps(dict(result, index=str(index_path)), sort_keys=True))
    else:
        print(f"compacted {index_path}: kept {result['kept']} items, dropped {result['removed']} removed ones")
    return 0


# --------------------------------------------------------------------------- serve


def cmd_serve(args: argparse.Namespace) -> int:
    from runtime.web.serve_index import serve_index

    return serve_index(args)


# --------------------------------------------------------------------------- parser


def _add_backend_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backend",
        choices=BACKEND_CHOICES,
        default="auto",
        help="inference backend (default auto: a TensorRT engine built here, else ONNX Runtime)",
    )
    parser.add_argument("--precision", choices=PRECISION_CHOICES, default="auto", help="model variant (default auto)")
    parser.add_argument("--threads", type=int, help="ONNX Runtime CPU threads (default: its own)")


def build_parser() -> argparse.ArgumentParser:
    parser = CliParser(prog="edge-mm-index", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    add = sub.add_parser("add", help="embed images, video frames or recordings into an index")
    add.add_argument(
        "targets",
        nargs="+",
        metavar="TARGET",
        help="image folder or file, video file, recording:FILE.bag|.db3, realsense[:SERIAL], folder:DIR, synthetic:SEED",
    )
    add.add_argument("--index", required=True, help="index folder (created if missing)")
    add.add_argument("--model", help="CLIP artifact folder (with image/ and text/); optional for an existing index")
    add.add_argument(
        "--fps",
        type=non_negative_number,
        default=1.0,
        help="frames per second taken from videos and recordings (default 1; 0 = all)",
    )
    add.add_argument("--max-frames", type=int, help="at most this many sampled frames per video or source")
    add.add_argument(
        "--saliency", help="CDINet artifact: index the salient object of each RGB-D frame, not the whole frame"
    )
    add.add_argument("--saliency-threshold", type=float, default=0.5, help="saliency mask threshold (default 0.5)")
    add.add_argument(
        "--pad",
        type=non_negative_number,
        default=DEFAULT_PAD,
        help=f"salient crop padding, share of the box side (default {DEFAULT_PAD})",
    )
    add.add_argument("--batch", type=int, default=32, help="images per embedding batch and commit (default 32)")
    add.add_argument(
        "--ray",
        nargs="?",
        const="auto",
        metavar="auto|ADDRESS",
        help="decode, preprocess and embed on a Ray cluster (pip install 'edge-mm[ray]'); image files only",
    )
    add.add_argument("--ray-actors", type=int, help="Ray actors embedding (default: one per cluster CPU)")
    add.add_argument(
        "--ray-gpus",
        type=float,
        default=0.0,
        help="GPUs per Ray actor (e.g. 1 or 0.5) so actors can open a TensorRT engine (default 0: CPU)",
    )
    add.add_argument("--no-progress", action="store_true", help="no progress bar")
    add.add_argument("--json", action="store_true", help="print the summary as JSON")
    _add_backend_options(add)
    add.set_defaults(func=cmd_add)

    search = sub.add_parser("search", help="the k items most like a text or an image")
    search.add_argument("query", nargs="?", help='text query, e.g. "a red mug"')
    search.add_argument("--image", type=Path, help="search with this image instead of a text")
    search.add_argument("--queries", type=Path, help="a text file of queries, one per line (one model load for all)")
    search.add_argument("--index", required=True, help="index folder")
    search.add_argument("--model", help="CLIP artifact folder (default: the one that made the index)")
    search.add_argument("-k", type=int, default=5, help="results to show (default 5)")
    search.add_argument("--json", action="store_true", help="print results as JSON")
    search.add_argument(
        "--faiss",
        nargs="?",
        const="ivf-flat",
        choices=FAISS_KINDS,
        help="search with FAISS (pip install faiss-cpu) instead of exactly; KIND defaults to ivf-flat",
    )
    search.add_argument(
        "--exact", action="store_true", help="exact search even on a large index (default: a graph from 20k items)"
    )
    _add_backend_options(search)
    search.set_defaults(func=cmd_search)

    remove = sub.add_parser("remove", help="remove items: searches skip them at once (compact reclaims the space)")
    remove.add_argument("--index", required=True, help="index folder")
    remove.add_argument("--path", help="items whose path matches this glob (* ? [..], case-sensitive; quote it)")
    remove.add_argument("--before", help="items added before this time (ISO 8601, local time, or epoch seconds)")
    remove.add_argument(
        "--id", type=int, nargs="+", action="extend", help="items with these ids (as search --json shows)"
    )
    remove.add_argument("--dry-run", action="store_true", help="only count what would be removed")
    remove.add_argument("--json", action="store_true", help="print the summary as JSON")
    remove.set_defaults(func=cmd_remove)

    compact = sub.add_parser("compact", help="reclaim the space of removed items (rewrites the index, ids change)")
    compact.add_argument("--index", required=True, help="index folder")
    compact.add_argument("--no-progress", action="store_true", help="no progress bar")
    compact.add_argument("--json", action="store_true", help="print the summary as JSON")
    compact.set_defaults(func=cmd_compact)

    info = sub.add_parser("info", help="what an index holds and which model made it")
    info.add_argument("--index", required=True, help="index folder")
    info.add_argument("--json", action="store_true", help="print as JSON")
    info.set_defaults(func=cmd_info)

    serve = sub.add_parser("serve", help="the search page for an index, in the browser")
    serve.add_argument("--index", required=True, help="index folder")
    serve.add_argument("--model", help="CLIP artifact folder (default: the one that made the index)")
    serve.add_argument("--serve", default="127.0.0.1:8090", metavar="HOST:PORT", help="where (default 127.0.0.1:8090)")
    serve.add_argument("--serve-token", metavar="TOKEN", help="the page's token (default: made up beyond loopback)")
    serve.add_argument("--serve-name", action="append", default=[], metavar="NAME", help="extra Host name to answer")
    serve.add_argument("-k", type=int, default=8, help="results per page the page starts with (default 8)")
    _add_backend_options(serve)
    serve.set_defaults(func=cmd_serve)
    return parser


def _main(argv: Optional[Sequence[str]]) -> int:
    logging.basicConfig(level=logging.WARNING, format="warning: %(message)s")
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    if getattr(args, "threads", None) is not None and args.threads < 1:
        raise UsageError(f"--threads {args.threads} must be >= 1")
    return int(args.func(args) or 0)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Console entry point (pyproject: edge-mm-index = runtime.retrieval.cli:main)."""
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
