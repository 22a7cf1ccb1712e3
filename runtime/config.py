"""TOML configuration for edge-mm-run: the same names as the command-line options; flags override.

    # edge-mm-run.toml
    model = "artifacts/cdinet-s"
    camera = "realsense"
    backend = "auto"
    threshold = 0.5
    out = "runs/today.mp4"
    serve = "127.0.0.1:8080"

    [source]            # options for the source itself (see runtime.sources), e.g. a RealSense mode
    width = 848
    height = 480
    filters = ["spatial", "temporal", "hole_filling"]

Keys are option names with dashes or underscores (`stats-interval` or `stats_interval`). An
unknown key, a value of the wrong type or an invalid choice is an error naming the key and file.
Relative paths are relative to the working directory, as on the command line.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Dict, Tuple, Union

from edge_mm.errors import UsageError

try:  # Python 3.11+
    import tomllib as _toml
except ModuleNotFoundError:  # pragma: no cover - 3.10 uses the tomli backport (a pyproject dependency there)
    import tomli as _toml  # type: ignore[no-redef]

SOURCE_TABLE = "source"
NOT_CONFIGURABLE = {"help", "config", "print_config"}


def read_toml(path: Union[str, Path]) -> Dict[str, Any]:
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            return _toml.load(fh)
    except FileNotFoundError:
        raise UsageError(f"config file {path} does not exist; give an existing TOML file to --config") from None
    except IsADirectoryError:
        raise UsageError(f"config file {path} is a folder; give a TOML file to --config") from None
    except _toml.TOMLDecodeError as exc:
        raise UsageError(f"config file {path} is not valid TOML ({exc}); fix it or leave out --config") from None
    except OSError as exc:
        raise UsageError(f"cannot read config file {path} ({exc.strerror})") from None


def _configurable(parser: argparse.ArgumentParser) -> Dict[str, argparse.Action]:
    return {a.dest: a for a in parser._actions if a.option_strings and a.dest not in NOT_CONFIGURABLE}


def _convert(key: str, value: Any, action: argparse.Action, where: str) -> Any:
    def bad(expected: str) -> UsageError:
        return UsageError(f"{where}: {key} = {value!r} should be {expected}")

    if isinstance(action, argparse._AppendAction):  # a repeatable flag (--target-sm 86 --target-sm 89): a list
        items = value if isinstance(value, list) else [value]
        if action.type is None:  # numbers are fine where the flag takes text (target_sm = [86, 89])
            items = [str(i) if isinstance(i, (int, float)) and not isinstance(i, bool) else i for i in items]
        return [
            _convert(key, item, argparse.Action(action.option_strings, key, type=action.type), where) for item in items
        ]
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        if not isinstance(value, bool):
            raise bad("true or false")
        return value if isinstance(action, argparse._StoreTrueAction) else not value
    if isinstance(action, argparse._AppendAction):  # a repeatable flag: a list of strings (or one string)
        values = value if isinstance(value, list) else [value]
        if not all(isinstance(v, str) for v in values):
            raise bad("a string or a list of strings")
        return values
    if isinstance(value, (dict, list)):
        raise bad("a single value")
    kind = action.type
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        value = float(value)
    elif kind is None:
        if not isinstance(value, str):
            raise bad("a string")
    else:  # a parsing function, such as a HOST:PORT or size parser: give it the text as a flag would
        try:
            value = kind(str(value))
        except (argparse.ArgumentTypeError, ValueError) as exc:
            raise UsageError(f"{where}: {key} = {value!r}: {exc}") from None
    if action.choices is not None and value not in action.choices:
        raise UsageError(f"{where}: {key} = {value!r} is not one of {', '.join(map(str, action.choices))}")
    return value


def apply_config(parser: argparse.ArgumentParser, data: Dict[str, Any], where: str) -> Dict[str, Any]:
    """Make the config's values the parser's defaults (so flags override them); return the [source] table."""
    actions = _configurable(parser)
    defaults: Dict[str, Any] = {}
    source_options: Dict[str, Any] = {}
    for raw_key, value in data.items():
        if raw_key == SOURCE_TABLE:
            if not isinstance(value, dict):
                raise UsageError(f"{where}: [{SOURCE_TABLE}] must be a table of source options")
            source_options = dict(value)
            continue
        key = raw_key.replace("-", "_")
        action = actions.get(key)
        if action is None:
            valid = sorted(k.replace("_", "-") for k in actions) + [f"[{SOURCE_TABLE}]"]
            raise UsageError(f"{where}: unknown key {raw_key!r}; valid keys: {', '.join(valid)}")
        defaults[key] = _convert(raw_key, value, action, where)
    parser.set_defaults(**defaults)
    return source_options


def load_into(parser: argparse.ArgumentParser, path: Union[str, Path]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Read `path` and apply it to `parser`; returns (the raw config, the [source] table)."""
    data = read_toml(path)
    return data, apply_config(parser, data, f"config {path}")


def to_toml(values: Dict[str, Any], source_options: Dict[str, Any]) -> str:
    """A TOML rendering of the effective settings (for --print-config)."""

    def fmt(value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (int, float)):
            return repr(value)
        if isinstance(value, (list, tuple)):
            return "[" + ", ".join(fmt(v) for v in value) + "]"
        return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = [f"{key.replace('_', '-')} = {fmt(value)}" for key, value in values.items() if value is not None]
    if source_options:
        lines += ["", f"[{SOURCE_TABLE}]"] + [f"{k} = {fmt(v)}" for k, v in source_options.items()]
    return "\n".join(lines) + "\n"
