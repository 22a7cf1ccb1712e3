"""What every edge-mm command line shares (torch-free).

- `CliParser`: argparse whose errors are one line plus "see PROG --help" (a UsageError, exit 2),
  for the parser and each of its subcommands.
- `run_cli`: an EdgeMMError becomes one line on stderr and exit code 2; Ctrl-C exits 130 and
  SIGTERM 143; library warnings (torch's UserWarning/FutureWarning, ...) are held back while the
  command runs and printed as one line each only if it succeeds, so an error stays one line.
- `stop_on_sigterm` (run_cli uses it for every command): SIGTERM raises `Terminated` (a
  KeyboardInterrupt) so outputs close cleanly and the command exits 143, not 130.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import math
import signal
import sys
import threading
import warnings
from typing import Callable, Iterator, NoReturn, Optional, Sequence

from edge_mm.errors import EdgeMMError, UsageError

EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_TERMINATED = 143  # 128 + SIGTERM


class CliParser(argparse.ArgumentParser):
    """argparse that raises UsageError (one line via run_cli) instead of printing usage and exiting."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        raise UsageError(f"{message.strip()}; see {self.prog} --help")

    def add_subparsers(self, **kwargs):  # subcommands raise the same one-line errors
        kwargs.setdefault("parser_class", CliParser)
        return super().add_subparsers(**kwargs)


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number")
    return value


def positive_number(text: str) -> float:
    """argparse type: a finite number > 0 (nan and inf would stall or break pacing and encoders)."""
    value = _finite(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be greater than 0")
    return value


def non_negative_number(text: str) -> float:
    """argparse type: a finite number >= 0."""
    value = _finite(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more")
    return value


class Terminated(KeyboardInterrupt):
    """SIGTERM (kill, docker stop, systemd): stops like Ctrl-C, exits 143."""


_last_stop = {"code": EXIT_INTERRUPTED}


def interrupt_exit_code(exc: Optional[BaseException] = None) -> int:
    """143 if the stop came from SIGTERM, else 130 (Ctrl-C)."""
    if isinstance(exc, Terminated):
        return EXIT_TERMINATED
    return _last_stop["code"]  # a handler that only noted the signal (note_stop_signal) decides


def note_stop_signal(signum: int) -> None:
    """Remember which signal stopped the command (for a handler that only sets a flag, like the pipeline's)."""
    _last_stop["code"] = EXIT_TERMINATED if signum == signal.SIGTERM else EXIT_INTERRUPTED


def _raise_terminated(signum, frame) -> None:
    note_stop_signal(signum)
    raise Terminated()


def install_sigterm_handler() -> Optional[object]:
    """Make SIGTERM raise Terminated in the main thread; returns the previous handler (None off the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_terminated)


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """SIGTERM raises Terminated inside the block; the previous handler comes back after it."""
    previous = install_sigterm_handler()
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _one_line(message: warnings.WarningMessage) -> str:
    text = str(message.message).strip().splitlines()
    return f"warning: {text[0] if text else message.category.__name__}"


def run_cli(main: Callable[[Optional[Sequence[str]]], int], argv: Optional[Sequence[str]] = None) -> int:
    """Run `main(argv)`; turn an EdgeMMError into one line on stderr and exit code 2.

    `--debug` anywhere in argv keeps the traceback and the warnings as they come (and is removed
    before `main` sees it).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    if debug:
        args = [a for a in args if a != "--debug"]
        return int(main(args) or 0)
    _last_stop["code"] = EXIT_INTERRUPTED
    with stop_on_sigterm(), warnings.catch_warnings(record=True) as held:
        warnings.simplefilter("default")
        try:
            code = int(main(args) or 0)
        except EdgeMMError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return exc.exit_code
        except KeyboardInterrupt as exc:
            code = interrupt_exit_code(exc)
            print("terminated" if code == EXIT_TERMINATED else "interrupted", file=sys.stderr)
            return code
    for message in dict.fromkeys(_one_line(m) for m in held):
        print(message, file=sys.stderr)
    return code


UsageErrorParser = CliParser  # the name the training and evaluation commands knew it by


def build_subcommand_parser(prog: str, description: str, subcommands) -> argparse.ArgumentParser:
    """A parser with one subcommand per model: {name: (module, help)}; each module adds its own options
    with add_arguments(parser) and runs with run(args) (the chosen module is args._module)."""
    parser = CliParser(prog=prog, description=description)
    sub = parser.add_subparsers(dest="model", metavar="MODEL")
    sub.required = True
    for name, (module, help_text) in subcommands.items():
        child = sub.add_parser(name, help=help_text, description=help_text)
        importlib.import_module(module).add_arguments(child)
        child.add_argument("--force", action="store_true", help="write into an --out folder that holds other files")
        child.set_defaults(_module=module)
    return parser


def parse_checked(prog: str, description: str, subcommands, out_kind, argv) -> argparse.Namespace:
    """Parse, then check --out (an edge_mm.outputs.OutputKind folder) before any work: a run must not
    end in an error about its own output."""
    from edge_mm.outputs import check_output

    args = build_subcommand_parser(prog, description, subcommands).parse_args(argv)
    if getattr(args, "out", None) is not None:
        check_output(args.out, "--out", out_kind, force=args.force)
    return args
