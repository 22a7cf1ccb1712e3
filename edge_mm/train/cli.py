"""`edge-mm-train`: one subcommand per model (cdinet, clip; each model's options live in its module)."""

from __future__ import annotations

import argparse
import importlib
from typing import Optional, Sequence

from edge_mm.cli_support import run_cli
from edge_mm.errors import UsageError

# subcommand -> (module with add_arguments(parser) and run(args), one-line help)
SUBCOMMANDS = {
    "cdinet": ("edge_mm.train.cdinet", "train CDINet (RGB-D saliency) on a dataset folder or synthetic scenes"),
    "clip": ("edge_mm.train.clip", "train CLIP on image-caption pairs (PAIRS.jsonl) or synthetic captioned scenes"),
}


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of exiting, so errors are one line with exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message}; see {self.prog} --help")


def build_parser(prog: str, description: str, subcommands) -> argparse.ArgumentParser:
    """A parser with one subcommand per model; each model module adds its own options."""
    parser = _Parser(prog=prog, description=description)
    sub = parser.add_subparsers(dest="model", metavar="MODEL", parser_class=_Parser)
    sub.required = True
    for name, (module, help_text) in subcommands.items():
        child = sub.add_parser(name, help=help_text, description=help_text)
        importlib.import_module(module).add_arguments(child)
        child.set_defaults(_module=module)
    return parser


def _main(argv: Optional[Sequence[str]]) -> int:
    args = build_parser("edge-mm-train", __doc__.splitlines()[0], SUBCOMMANDS).parse_args(argv)
    return importlib.import_module(args._module).run(args)


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    import sys

    sys.exit(main())
