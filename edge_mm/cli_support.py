"""What every edge-mm command line shares: one-line errors with exit code 2 (torch-free)."""

import sys
from typing import Callable, Optional, Sequence

from edge_mm.errors import EdgeMMError


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
