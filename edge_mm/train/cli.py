"""`edge-mm-train`: one subcommand per model (cdinet, clip; each model's options live in its module).

One process: `edge-mm-train MODEL ...`. Several: `torchrun --nproc-per-node N -m edge_mm.train.cli MODEL ...`
(edge_mm.train.distributed).
"""

from __future__ import annotations

import importlib
from typing import Optional, Sequence

from edge_mm.cli_support import parse_checked, run_cli
from edge_mm.outputs import OutputKind, folder_holding

# subcommand -> (module with add_arguments(parser) and run(args), one-line help)
SUBCOMMANDS = {
    "cdinet": ("edge_mm.train.cdinet", "train CDINet (RGB-D saliency) on a dataset folder or synthetic scenes"),
    "clip": ("edge_mm.train.clip", "train CLIP on image-caption pairs (PAIRS.jsonl) or synthetic captioned scenes"),
}


# What --out holds after a run: an existing folder must hold these (or be empty) to be written into.
TRAIN_RUN = OutputKind(
    "an edge-mm-train run (last.pth, best.pth, metrics.json)",
    folder_holding("last.pth", "best.pth", "metrics.json"),
    folder=True,
)


def _main(argv: Optional[Sequence[str]]) -> int:
    args = parse_checked("edge-mm-train", __doc__.splitlines()[0], SUBCOMMANDS, TRAIN_RUN, argv)
    return importlib.import_module(args._module).run(args)


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    import sys

    sys.exit(main())
