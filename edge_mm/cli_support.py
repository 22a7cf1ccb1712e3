"""What every edge-mm command line shares: one-line errors with exit code 2, subcommand parsers (torch-free)."""

import argparse
import importlib
import sys
from typing import Callable, Optional, Sequence

from edge_mm.errors import EdgeMMError, UsageError


def run_cli(main: Callable[[Optional[Sequence[str]]], int], argv: Optional[Sequence[str]] = None) -> int:
    """Run `main(argv)`; turn an EdgeMMError into one line on stderr and exit code 2.

    `--debug` anywhere in argv keeps the traceback (and is removed before `main` sees it).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    if debug:
        args = [a for a in args if a != "--debug"]
    try:
        return int(main(args) or 0)
    except EdgeMMError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


class UsageErrorParser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of exiting, so errors are one line with exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message}; see {self.prog} --help")


def build_subcommand_parser(prog: str, description: str, subcommands) -> argparse.ArgumentParser:
    """A parser with one subcommand per model: {name: (module, help)}; each module adds its own options
    with add_arguments(parser) and runs with run(args) (the chosen module is args._module)."""
    parser = UsageErrorParser(prog=prog, description=description)
    sub = parser.add_subparsers(dest="model", metavar="MODEL", parser_class=UsageErrorParser)
    sub.required = True
    for name, (module, help_text) in subcommands.items():
        child = sub.add_parser(name, help=help_text, description=help_text)
        importlib.import_module(module).add_arguments(child)
        child.set_defaults(_module=module)
    return parser
