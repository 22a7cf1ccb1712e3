"""CLIP tokenizer throughput: edge_mm.clip.tokenizer vs open_clip's SimpleTokenizer, same texts.

    python bench/bench_tokenizer.py [--texts 20000] [--json bench/results/tokenizer.json]

Each tokenizer is timed on a fresh instance (cold: empty BPE cache) and again on the same instance
(warm: every word cached), for plain English captions and for captions with non-ASCII text and
HTML entities. Outputs are checked to be identical. Needs torch and open_clip (dev extras).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_mm.atomic import write_json  # noqa: E402
from edge_mm.cli_support import run_cli  # noqa: E402
from edge_mm.clip import tokenizer as tk  # noqa: E402
from edge_mm.errors import UsageError  # noqa: E402

SUBJECTS = [
    "dog",
    "cat",
    "man",
    "woman",
    "child",
    "bird",
    "horse",
    "car",
    "train",
    "boat",
    "pizza",
    "laptop",
    "skateboarder",
    "giraffe",
    "elephant",
    "bicycle",
    "umbrella",
    "kitchen",
    "surfer",
    "teddy bear",
]
ADJECTIVES = ["small", "large", "red", "black", "white", "young", "old", "wooden", "shiny", "blurry", "happy"]
ACTIONS = [
    "sitting on",
    "standing next to",
    "running across",
    "riding",
    "holding",
    "looking at",
    "lying on",
    "jumping over",
    "parked near",
    "eating",
]
PLACES = [
    "a bench",
    "the beach",
    "a grassy field",
    "a busy street",
    "the kitchen table",
    "a snowy hill",
    "an old building",
    "the water",
    "a wooden fence",
    "a crowded market",
]
EXTRAS = ["café", "naïve", "東京", "😀", "&amp;", "Ünïcödé", "&#39;s", "résumé", "北京", "🇺🇸", "Привет", "&lt;3"]


def make_captions(count: int, seed: int, non_ascii: bool) -> List[str]:
    rnd = random.Random(seed)
    out = []
    for _i in range(count):
        words = [
            rnd.choice(["A", "The", "Two", "Some"]),
            rnd.choice(ADJECTIVES),
            rnd.choice(SUBJECTS),
            rnd.choice(ACTIONS),
            rnd.choice(PLACES),
        ]
        if rnd.random() < 0.5:
            words += ["with", "a", rnd.choice(ADJECTIVES), rnd.choice(SUBJECTS)]
        # Rare words (names, typos, ids) keep the BPE cache from covering everything.
        if rnd.random() < 0.3:
            words.append("".join(rnd.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rnd.randint(4, 12))))
        if non_ascii:
            words.insert(rnd.randint(0, len(words)), rnd.choice(EXTRAS))
        out.append(" ".join(words) + rnd.choice([".", "", "!", " in 2024."]))
    return out


def bench_set(name: str, texts: Sequence[str], repeat: int) -> List[Dict]:
    """Cold: one run on a fresh instance. Warm: `repeat` runs, alternating implementations so that
    load from other processes hits both alike; the best run counts."""
    from open_clip.tokenizer import SimpleTokenizer as OpenClipTokenizer

    ours, theirs = tk.SimpleTokenizer(), OpenClipTokenizer()
    runs: Dict[str, Callable[[], np.ndarray]] = {
        "edge_mm": lambda: tk.tokenize(list(texts), truncate=True, tokenizer=ours),
        "open_clip": lambda: theirs(list(texts)).numpy(),
    }
    rows = []
    for phase, rounds in (("cold", 1), ("warm", repeat)):
        best = {impl: float("inf") for impl in runs}
        ids = {}
        for _ in range(rounds):
            for impl, fn in runs.items():
                start = time.perf_counter()
                ids[impl] = fn()
                best[impl] = min(best[impl], time.perf_counter() - start)
        if not np.array_equal(ids["edge_mm"], ids["open_clip"]):
            raise RuntimeError(f"{name}: edge_mm and open_clip ids differ")
        tokens = int((ids["edge_mm"] != 0).sum())
        for impl, seconds in best.items():
            rows.append(
                {
                    "set": name,
                    "phase": phase,
                    "impl": impl,
                    "texts": len(texts),
                    "tokens": tokens,
                    "seconds": seconds,
                    "texts_per_s": len(texts) / seconds,
                    "tokens_per_s": tokens / seconds,
                }
            )
    return rows


def print_table(rows: List[Dict]) -> None:
    print(f"{'set':<10} {'phase':<5} {'impl':<10} {'texts/s':>10} {'tokens/s':>11} {'vs open_clip':>13}")
    for row in rows:
        base = next(
            r for r in rows if r["set"] == row["set"] and r["phase"] == row["phase"] and r["impl"] == "open_clip"
        )
        print(
            f"{row['set']:<10} {row['phase']:<5} {row['impl']:<10} {row['texts_per_s']:>10.0f} "
            f"{row['tokens_per_s']:>11.0f} {row['tokens_per_s'] / base['tokens_per_s']:>12.2f}x"
        )


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=3, help="warm runs; the best is kept")
    parser.add_argument("--json", type=Path, default=Path(__file__).with_name("results") / "tokenizer.json")
    args = parser.parse_args(argv)
    if args.texts < 1 or args.repeat < 1:
        raise UsageError("--texts and --repeat must be >= 1")
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        raise UsageError("the comparison needs torch and open_clip_torch: pip install -e '.[dev]'") from None

    rows = bench_set("english", make_captions(args.texts, 0, non_ascii=False), args.repeat)
    rows += bench_set("unicode", make_captions(args.texts, 1, non_ascii=True), args.repeat)
    print_table(rows)
    report = {
        "rows": rows,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "identical_ids": True,
    }
    write_json(args.json, report, indent=2)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
