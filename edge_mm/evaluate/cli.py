"""`edge-mm-eval`: one subcommand per model (cdinet, artifact); predictions and metrics.json under --out."""

from __future__ import annotations

import importlib
from typing import Optional, Sequence

from edge_mm.cli_support import build_subcommand_parser, run_cli

SUBCOMMANDS = {
    "cdinet": ("edge_mm.evaluate.cdinet", "evaluate CDINet with the official test pipeline and PySODMetrics"),
    "artifact": ("edge_mm.evaluate.artifact", "evaluate any saliency artifact (export or import) the same way"),
}


def _main(argv: Optional[Sequence[str]]) -> int:
    args = build_subcommand_parser("edge-mm-eval", __doc__.splitlines()[0], SUBCOMMANDS).parse_args(argv)
    return importlib.import_module(args._module).run(args)


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    import sys

    sys.exit(main())
