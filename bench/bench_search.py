"""Retrieval search latency vs index size: exact, FAISS and HNSW graph candidates, beside NanoDB on AGX Orin.

    python bench/bench_search.py [--sizes 1k,100k,1M] [--dim 512] [--json bench/results/search.json]
    python bench/bench_search.py --sizes 100k --threads 1 --graphs all --ef 32,64,128

For each size an IndexStore of clustered unit vectors (CLIP-like: many near-duplicate groups) is
built in a scratch folder, then searched with k=10:

- exact-fp16: the default ExactIndex streaming fp16 rows from the memmap (no RAM copy);
- exact-fp32: ExactIndex with a float32 copy cached in RAM (the default below 512 MiB);
- faiss-flat-fp16 / faiss-ivf/<nprobe> / faiss-hnsw: FaissIndex kinds (if faiss-cpu is installed),
  with build time and recall@10 against exact search; IVF is timed for each --ivf-nprobe value on
  one build (nlist is the library default, printed in the JSON);
- graph candidates for the `ann` backend (--graphs), each timed at every --ef on one build, all
  re-ranking their top --candidates with the stored fp16 rows as the product does:
  ann-usearch-i8 (runtime.retrieval.ann.GraphIndex itself, the default), usearch-f16,
  faiss-hnsw-sq8, faiss-hnsw-fp16, faiss-hnsw-flat and hnswlib (float32 only). bytes/vector is the
  saved graph file (codes + links) over the row count; the fp16 rows used for re-ranking are the
  store's own (1024 B/vector at 512-d, memory-mapped, only candidates are read).

Single-query latency is the p50 (and p95) of one query per call; batch latency is one call with
--batch queries. NanoDB's numbers (Jetson AI Lab benchmarks page, AGX Orin, flat k-NN on the GPU,
CLIP-L 768-d; research/clip.md section 4) are printed beside the single-query p50 with the ratio
ours / NanoDB. Our dim defaults to 512 (CLIP ViT-B); the hardware differs, so the ratio is context,
not a like-for-like comparison.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence


def _thread_count_from_argv(argv: Sequence[str]) -> Optional[str]:
    """--threads must act before numpy/faiss load their thread pools, so it is read this early."""
    for i, arg in enumerate(argv):
        if arg == "--threads" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--threads="):
            return arg.split("=", 1)[1]
    return None


if _thread_count_from_argv(sys.argv[1:]):
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_var] = _thread_count_from_argv(sys.argv[1:])

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_mm.atomic import write_json  # noqa: E402
from edge_mm.cli_support import run_cli  # noqa: E402
from edge_mm.errors import UsageError  # noqa: E402
from runtime.retrieval import ExactIndex, IndexStore, ModelInfo, recall_at_k  # noqa: E402
from runtime.retrieval.search import prepare_queries  # noqa: E402

GRAPHS = ("ann-usearch-i8", "usearch-f16", "faiss-hnsw-sq8", "faiss-hnsw-fp16", "faiss-hnsw-flat", "hnswlib")

# Vector search latency by database size, NanoDB on Jetson AGX Orin (ms), research/clip.md section 4.
NANODB_ORIN_MS = {
    1_000: 0.7,
    25_000: 1.3,
    50_000: 2.0,
    100_000: 3.2,
    250_000: 7.0,
    500_000: 13.5,
    1_000_000: 25.7,
    2_500_000: 63.2,
    5_000_000: 97.1,
    10_000_000: 166.6,
}
K = 10
ADD_BATCH = 50_000


def parse_size(text: str) -> int:
    text = text.strip().lower()
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    try:
        value = float(text[:-1] if scale > 1 else text) * scale
    except ValueError:
        raise UsageError(f"bad size {text!r}; use numbers like 1000, 100k or 1M") from None
    if value < 1:
        raise UsageError(f"size must be at least 1, got {text!r}")
    return int(value)


def clustered_batch(rng: np.random.Generator, centers: np.ndarray, n: int, spread: float) -> np.ndarray:
    d = centers.shape[1]
    x = centers[rng.integers(0, len(centers), n)]
    x += spread * rng.standard_normal((n, d), dtype=np.float32) / np.sqrt(d)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def build_store(path: Path, size: int, dim: int, spread: float, seed: int) -> tuple:
    """A store of `size` clustered vectors (one cluster per ~20 items) and held-out queries."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((max(1, size // 20), dim), dtype=np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    store = IndexStore(path, dim=dim, model_info=ModelInfo("bench-random", "0" * 64), mode="a")
    start = time.perf_counter()
    with tqdm(total=size, desc=f"store {size}", unit="vec", leave=False) as bar:
        for lo in range(0, size, ADD_BATCH):
            n = min(ADD_BATCH, size - lo)
            store.add(
                clustered_batch(rng, centers, n, spread), [{"content_hash": str(lo + i), "path": ""} for i in range(n)]
            )
            bar.update(n)
    add_s = time.perf_counter() - start
    queries = clustered_batch(rng, centers, 256, spread)
    return store, queries, add_s


def time_calls(fn: Callable[[], Any], repeat: int, warmup: int = 2) -> np.ndarray:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return np.array(out) * 1e3


def measure(
    name: str,
    index: Any,
    queries: np.ndarray,
    size: int,
    batch: int,
    budget_s: float,
    exact_ids: Optional[np.ndarray],
    build_s: Optional[float],
) -> Dict[str, Any]:
    # Enough single queries for a stable p50 without spending more than ~budget_s on one method.
    probe = time_calls(lambda: index.search(queries[0], K), repeat=1, warmup=1)[0]
    repeat = int(np.clip(budget_s * 1e3 / max(probe, 1e-3), 5, 200))
    qi = iter(range(10**9))
    single = time_calls(lambda: index.search(queries[next(qi) % len(queries)], K), repeat=repeat)
    batched = time_calls(lambda: index.search(queries[:batch], K), repeat=max(3, min(20, repeat // batch)), warmup=1)
    row: Dict[str, Any] = {
        "method": name,
        "size": size,
        "single_p50_ms": float(np.median(single)),
        "single_p95_ms": float(np.percentile(single, 95)),
        "single_repeats": repeat,
        "batch": batch,
        "batch_call_ms": float(np.median(batched)),
        "batch_per_query_ms": float(np.median(batched) / batch),
        "build_s": build_s,
    }
    if exact_ids is not None:
        row["recall_at_10"] = recall_at_k(index.search(queries[: len(exact_ids)], K)[1], exact_ids, K)
    nano = NANODB_ORIN_MS.get(size)
    row["nanodb_orin_ms"] = nano
    row["ratio_vs_nanodb"] = row["single_p50_ms"] / nano if nano else None
    return row


def bench_size(size: int, args: argparse.Namespace, workdir: Path, faiss_ok: bool) -> List[Dict[str, Any]]:
    path = workdir / f"idx-{size}"
    shutil.rmtree(path, ignore_errors=True)
    store, queries, add_s = build_store(path, size, args.dim, args.spread, args.seed)
    print(f"[{size}] store built in {add_s:.1f} s ({size / add_s:,.0f} vectors/s)", flush=True)
    rows = []
    try:
        exact = ExactIndex(store, cache_bytes=0)
        truth = exact.search(queries[: args.recall_queries], K)[1]
        rows.append(measure("exact-fp16", exact, queries, size, args.batch, args.budget, None, None))
        rows[-1]["store_add_s"] = add_s
        if size * args.dim * 4 <= args.max_cache_gb * (1 << 30):
            t = time.perf_counter()
            cached = ExactIndex(store, cache_bytes=1 << 62)
            cached.search(queries[0], K)  # builds the float32 copy
            rows.append(
                measure("exact-fp32", cached, queries, size, args.batch, args.budget, None, time.perf_counter() - t)
            )
            del cached
        if faiss_ok:
            from runtime.retrieval.faiss_index import FaissIndex

            for kind in args.faiss_kinds:
                if kind == "hnsw" and size > args.hnsw_max:
                    print(f"[{size}] skip faiss hnsw (build too slow here; raise --hnsw-max)", flush=True)
                    continue
                t = time.perf_counter()
                index = FaissIndex(store, kind=kind, save=False)
                build_s = time.perf_counter() - t
                if kind != "ivf-flat":
                    rows.append(measure(f"faiss-{kind}", index, queries, size, args.batch, args.budget, truth, build_s))
                for nprobe in args.ivf_nprobe if kind == "ivf-flat" else []:
                    index.set_search_params(nprobe=None if nprobe == "auto" else min(int(nprobe), index.meta["nlist"]))
                    name = f"faiss-ivf/{index.nprobe}"
                    rows.append(measure(name, index, queries, size, args.batch, args.budget, truth, build_s))
                    rows[-1]["nlist"], rows[-1]["nprobe"] = index.meta["nlist"], index.nprobe
                del index
        rows += graph_rows(store, queries, size, args, truth, workdir)
        for r in rows:
            print(
                f"[{size}] {r['method']:<22} p50 {r['single_p50_ms']:.3f} ms"
                + (f"  recall@10 {r['recall_at_10']:.3f}" if "recall_at_10" in r else ""),
                flush=True,
            )
    finally:
        store.close()
        if not args.keep:
            shutil.rmtree(path, ignore_errors=True)
    return rows


class Reranked:
    """A library graph's top `candidates` re-scored with the store's fp16 rows (what GraphIndex does)."""

    def __init__(self, store: IndexStore, find: Callable[[np.ndarray, int], np.ndarray], candidates: int) -> None:
        self.store, self.find, self.candidates = store, find, candidates

    def search(self, queries: np.ndarray, k: int):
        q = prepare_queries(queries, self.store.dim)
        vectors = self.store.vectors()
        out = np.full((len(q), k), -1, dtype=np.int64)
        for row in range(len(q)):
            cand = np.sort(self.find(q[row], self.candidates))
            cand = cand[cand >= 0]
            scores = np.asarray(vectors[cand], np.float32) @ q[row]
            top = np.argsort(-scores)[:k]
            out[row, : top.size] = cand[top]
        return None, out


def _file_bytes(save: Callable[[str], None], workdir: Path) -> int:
    path = workdir / "graph.tmp"
    save(str(path))
    size = path.stat().st_size
    path.unlink()
    return size


def build_graph(name: str, store: IndexStore, args: argparse.Namespace, workdir: Path):
    """(searcher, set_ef, bytes) for one candidate, built over the whole store on args.build_threads."""
    n, dim, m = len(store), store.dim, args.graph_m
    vectors = store.vectors()

    def chunks():
        for lo in range(0, n, ADD_BATCH):
            yield lo, np.ascontiguousarray(vectors[lo : lo + ADD_BATCH], dtype=np.float32)

    if name == "ann-usearch-i8":
        from runtime.retrieval.ann import GraphIndex

        index = GraphIndex(
            store,
            connectivity=m,
            expansion_add=args.ef_construction,
            candidates=args.candidates,
            threads=args.build_threads,
            save=False,
            progress=True,
        )
        index.threads = 1

        def set_ef(ef: int) -> None:
            index.graph.expansion_search = ef

        return index, set_ef, _file_bytes(index.graph.save, workdir)
    if name == "usearch-f16":
        from runtime.retrieval.ann import import_usearch

        graph = import_usearch()(ndim=dim, metric="ip", dtype="f16", connectivity=m, expansion_add=args.ef_construction)
        for lo, block in tqdm(chunks(), total=-(-n // ADD_BATCH), desc=name, leave=False):
            graph.add(np.arange(lo, lo + len(block)), block, threads=args.build_threads)

        def find(q: np.ndarray, c: int) -> np.ndarray:
            return np.asarray(graph.search(q, c, threads=1).keys, dtype=np.int64)

        def set_ef(ef: int) -> None:
            graph.expansion_search = ef

        return Reranked(store, find, args.candidates), set_ef, _file_bytes(graph.save, workdir)
    if name.startswith("faiss-hnsw-"):
        import faiss

        factory = {"sq8": f"HNSW{m}_SQ8", "fp16": f"HNSW{m}_SQfp16", "flat": f"HNSW{m}"}[name.rsplit("-", 1)[1]]
        faiss.omp_set_num_threads(args.build_threads)
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = args.ef_construction
        if not index.is_trained:
            pick = np.sort(np.random.default_rng(0).choice(n, size=min(n, 100_000), replace=False))
            index.train(np.ascontiguousarray(vectors[pick], dtype=np.float32))
        for _, block in tqdm(chunks(), total=-(-n // ADD_BATCH), desc=name, leave=False):
            index.add(block)
        faiss.omp_set_num_threads(1)

        def find(q: np.ndarray, c: int) -> np.ndarray:
            return index.search(q[None], c)[1][0]

        def set_ef(ef: int) -> None:
            index.hnsw.efSearch = max(ef, args.candidates)

        size = _file_bytes(lambda p: faiss.write_index(index, p), workdir)
        return Reranked(store, find, args.candidates), set_ef, size
    if name == "hnswlib":
        import hnswlib

        index = hnswlib.Index(space="ip", dim=dim)
        index.init_index(max_elements=n, M=m, ef_construction=args.ef_construction)
        index.set_num_threads(args.build_threads)
        for lo, block in tqdm(chunks(), total=-(-n // ADD_BATCH), desc=name, leave=False):
            index.add_items(block, np.arange(lo, lo + len(block)))
        index.set_num_threads(1)

        def find(q: np.ndarray, c: int) -> np.ndarray:
            return index.knn_query(q, c)[0][0].astype(np.int64)

        def set_ef(ef: int) -> None:
            index.set_ef(max(ef, args.candidates))

        return Reranked(store, find, args.candidates), set_ef, _file_bytes(index.save_index, workdir)
    raise UsageError(f"unknown graph candidate {name!r}; choose from {', '.join(GRAPHS)}")


def graph_rows(store, queries, size, args, truth, workdir) -> List[Dict[str, Any]]:
    rows = []
    for name in args.graphs:
        if size > args.graph_max:
            print(f"[{size}] skip {name} (above --graph-max)", flush=True)
            continue
        t = time.perf_counter()
        try:
            searcher, set_ef, nbytes = build_graph(name, store, args, workdir)
        except ImportError as exc:
            print(f"[{size}] skip {name}: {exc}", flush=True)
            continue
        build_s = time.perf_counter() - t
        print(f"[{size}] {name} built in {build_s:.1f} s, {nbytes / size:.0f} B/vector", flush=True)
        for ef in args.ef:
            set_ef(ef)
            row = measure(f"{name}/ef{ef}", searcher, queries, size, args.batch, args.budget, truth, build_s)
            row.update(ef=ef, candidates=args.candidates, graph_m=args.graph_m, bytes_per_vector=nbytes / size)
            row["build_threads"] = args.build_threads
            rows.append(row)
        del searcher, set_ef
    return rows


def format_table(rows: Sequence[Dict[str, Any]]) -> str:
    head = (
        f"{'size':>9} {'method':<22} {'p50 ms':>9} {'p95 ms':>9} {'batch/q ms':>10} {'build s':>8} "
        f"{'recall@10':>9} {'B/vector':>8} {'NanoDB ms':>9} {'ours/Nano':>9}"
    )
    lines = [head, "-" * len(head)]

    def fmt(value: Optional[float], spec: str) -> str:
        return "-" if value is None else format(value, spec)

    for r in rows:
        lines.append(
            f"{r['size']:>9,} {r['method']:<22} {r['single_p50_ms']:>9.3f} {r['single_p95_ms']:>9.3f} "
            f"{r['batch_per_query_ms']:>10.3f} {fmt(r.get('build_s'), '8.1f'):>8} {fmt(r.get('recall_at_10'), '.3f'):>9} "
            f"{fmt(r.get('bytes_per_vector'), '8.0f'):>8} "
            f"{fmt(r['nanodb_orin_ms'], '.1f'):>9} {fmt(r['ratio_vs_nanodb'], '.1f'):>9}"
        )
    return "\n".join(lines)


def machine() -> Dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "loadavg_1min": os.getloadavg()[0],
        "threads_env": {v: os.environ.get(v) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")},
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": platform.platform(),
    }
    try:
        import faiss

        info["faiss"] = faiss.__version__
    except ImportError:
        info["faiss"] = None
    for package in ("usearch", "hnswlib"):
        try:
            from importlib.metadata import version

            info[package] = version(package)
        except Exception:
            info[package] = None
    return info


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="1k,100k,1M", help="comma-separated index sizes (1k, 100k, 1M, ...)")
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--batch", type=int, default=32, help="queries per call for the batch latency")
    p.add_argument("--faiss-kinds", default="flat-fp16,ivf-flat,hnsw", help="FAISS kinds to time ('' for none)")
    p.add_argument(
        "--ivf-nprobe", default="auto", help="comma list of IVF nprobe values to time on one build ('auto': nlist/8)"
    )
    p.add_argument("--hnsw-max", type=parse_size, default=100_000, help="skip HNSW above this size (slow to build)")
    p.add_argument(
        "--graphs", default="all", help=f"graph candidates, comma list or 'all' ({', '.join(GRAPHS)}), '' for none"
    )
    p.add_argument("--graph-max", type=parse_size, default=1_000_000, help="skip graph candidates above this size")
    p.add_argument("--graph-m", type=int, default=32, help="graph connectivity M (links per node)")
    p.add_argument("--ef-construction", type=int, default=200, help="graph build-time candidate list")
    p.add_argument("--ef", default="32,64,128", help="search-time candidate lists to time on each graph")
    p.add_argument("--candidates", type=int, default=40, help="graph hits re-ranked with the fp16 rows")
    p.add_argument("--build-threads", type=int, default=2, help="threads for graph builds (queries use 1)")
    p.add_argument("--max-cache-gb", type=float, default=2.0, help="skip exact-fp32 when its RAM copy is larger")
    p.add_argument("--budget", type=float, default=3.0, help="seconds of single queries per method and size")
    p.add_argument("--recall-queries", type=int, default=100)
    p.add_argument("--spread", type=float, default=1.0, help="cluster spread (1.0: cos to centre ~0.7)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="BLAS/OpenMP threads (default: the environment's; 1 is steadier on a loaded machine)",
    )
    p.add_argument("--workdir", type=Path, default=None, help="scratch folder for the stores (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the scratch stores")
    p.add_argument("--json", type=Path, default=Path(__file__).resolve().parent / "results" / "search.json")
    args = p.parse_args(argv)
    sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    args.faiss_kinds = [k for k in args.faiss_kinds.split(",") if k.strip()]
    args.ivf_nprobe = [v.strip() for v in args.ivf_nprobe.split(",") if v.strip()]
    args.graphs = list(GRAPHS) if args.graphs == "all" else [g for g in args.graphs.split(",") if g.strip()]
    args.ef = [int(v) for v in args.ef.split(",") if v.strip()]
    if any(v != "auto" and not v.isdigit() for v in args.ivf_nprobe):
        raise UsageError(f"--ivf-nprobe takes 'auto' or positive integers, got {args.ivf_nprobe}")
    try:
        import faiss  # noqa: F401 - before usearch: the other order segfaults (runtime.retrieval.ann)

        faiss_ok = bool(args.faiss_kinds)
    except ImportError:
        print("faiss-cpu not installed: timing exact search only (pip install faiss-cpu)", flush=True)
        faiss_ok = False

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="edge-mm-bench-search-"))
    workdir.mkdir(parents=True, exist_ok=True)
    rows: List[Dict[str, Any]] = []
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    try:
        for size in sizes:
            rows += bench_size(size, args, workdir, faiss_ok)
    finally:
        if args.workdir is None and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    table = format_table(rows)
    print()
    print(table)
    print(
        f"\nk={K}, dim={args.dim}, batch={args.batch}; NanoDB: AGX Orin GPU flat search, CLIP-L 768-d. "
        f"Load average (1 min) at start {load_before:.1f}, end {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores."
    )
    result = {
        "machine": machine(),
        "loadavg_1min_at_start": load_before,
        "k": K,
        "dim": args.dim,
        "batch": args.batch,
        "spread": args.spread,
        "seed": args.seed,
        "total_s": time.perf_counter() - started,
        "nanodb_orin_ms": NANODB_ORIN_MS,
        "rows": rows,
        "table": table,
    }
    write_json(args.json, result, indent=1)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
