"""`edge-mm-train`: one subcommand per model (cdinet, clip; each model's options live in its module).

One process: `edge-mm-train MODEL ...`. Several: `torchrun --nproc-per-node N -m edge_mm.train.cli MODEL ...`
(edge_mm.train.distributed).
"""

from __future__ import annotations

import importlib
from typing import Optional, Sequence

from edge_mm.cli_support import build_subcommand_parser, run_cli

# subcommand -> (module with add_arguments(parser) and run(args), one-line help)
SUBCOMMANDS = {
    "cdinet": ("edge_mm.train.cdinet", "train CDINet (RGB-D saliency) on a dataset folder or synthetic scenes"),
    "clip": ("edge_mm.train.clip", "train CLIP on image-caption pairs (PAIRS.jsonl) or synthetic captioned scenes"),
}


def _main(argv: Optional[Sequence[str]]) -> int:
    args = build_subcommand_parser("edge-mm-train", __doc__.splitlines()[0], SUBCOMMANDS).parse_args(argv)
    return importlib.import_module(args._module).run(args)


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    import sys

    sys.exit(main())
