"""`edge-mm-eval`: one subcommand per model (cdinet, artifact); predictions and metrics.json under --out."""

from __future__ import annotations

import importlib
from typing import Optional, Sequence

from edge_mm.cli_support import parse_checked, run_cli
from edge_mm.outputs import OutputKind, folder_holding

SUBCOMMANDS = {
    "cdinet": ("edge_mm.evaluate.cdinet", "evaluate CDINet with the official test pipeline and PySODMetrics"),
    "artifact": ("edge_mm.evaluate.artifact", "evaluate any saliency artifact (export or import) the same way"),
}


EVAL_RUN = OutputKind(
    "an edge-mm-eval result (metrics.json, pred/)", folder_holding("metrics.json", "pred"), folder=True
)


def _main(argv: Optional[Sequence[str]]) -> int:
    args = parse_checked("edge-mm-eval", __doc__.splitlines()[0], SUBCOMMANDS, EVAL_RUN, argv)
    return importlib.import_module(args._module).run(args)


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    import sys

    sys.exit(main())
