#!/usr/bin/env python3
"""Regenerate docs/search_latency_recall.png from bench/bench_search.py results (needs matplotlib).

    python bench/bench_search.py --sizes 100k --threads 1 --json bench/results/search-100k.json
    python bench/bench_search.py --sizes 200k --threads 1 --graphs ann-usearch-i8,faiss-hnsw-sq8 --json bench/results/search-200k.json
    python docs/make_search_plot.py [RESULTS.json ...]   (default: bench/results/search-*.json)

One panel per index size: single-query p50 latency (log scale) against recall@10, one marker per
method; a graph candidate's points (one per search-time ef) are joined by a line. The target box
of issue 13 (p50 <= 1 ms at recall@10 >= 0.95) is shaded.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_INPUTS = sorted((ROOT / "bench" / "results").glob("search-*.json"))


def main(argv=None) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("inputs", nargs="*", type=Path, default=DEFAULT_INPUTS)
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "search_latency_recall.png")
    args = p.parse_args(argv)
    rows = []
    for path in args.inputs:
        if path.is_file():
            rows += json.loads(path.read_text())["rows"]
        else:
            print(f"skipped {path}: not there", file=sys.stderr)
    sizes = sorted({r["size"] for r in rows})
    if not sizes:
        print("no results to plot", file=sys.stderr)
        return 2
    fig, axes = plt.subplots(1, len(sizes), figsize=(7.6 * len(sizes), 4.6), squeeze=False)
    for ax, size in zip(axes[0], sizes):
        families = defaultdict(list)
        for r in rows:
            if r["size"] != size:
                continue
            recall = r.get("recall_at_10", 1.0)  # exact rows are the reference
            family = r["method"].split("/")[0]
            if "graph_m" in r:  # graphs built with other settings are other curves
                family += f" M{r['graph_m']}"
            families[family].append((recall, r["single_p50_ms"], r["method"]))
        colors = plt.get_cmap("tab20").colors
        for i, (name, points) in enumerate(sorted(families.items())):
            points.sort()
            xs, ys = [p[0] for p in points], [p[1] for p in points]
            style = "-" if len(points) > 1 else "none"
            marker = "os^Dv<>P*Xhd"[i % 12]
            ax.plot(xs, ys, marker=marker, linestyle=style, color=colors[(2 * i) % 20 + (i // 10) % 2], label=name)
        ax.fill_between(
            [0.95, 1.005], 0, 1.0, color="tab:green", alpha=0.12, label="target: p50 <= 1 ms, recall >= 0.95"
        )
        ax.set_yscale("log")
        ax.set_xlabel("recall@10 against exact search")
        ax.set_ylabel("single-query p50, ms (1 thread)")
        ax.set_title(f"{size:,} x 512, clustered")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle(
        "bench/bench_search.py: latency against recall (100k, 200k: 2-core x86 dev box, shared and loaded; "
        "1M: the 16-core CPU host of the lent H200)",
        fontsize=10,
    )
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
