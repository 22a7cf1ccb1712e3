"""The stages edge-mm-run assembles, in pipeline order: saliency, then CLIP on its salient crop.

A stage factory is a module (or any object) with
    NAME                          the stage's name
    add_arguments(parser)         its command-line options (may add none)
    from_args(args, ctx) -> Stage or None   None: not asked for in this run (e.g. no --clip)
`ctx` is an AssemblyContext: how to print, how to open an artifact, and what the source is.

Adding a stage is a new module with those three names and one line: its entry in the tuple of
built-in stages below (or `register(module)` from code: a plug-in, a test). The stage class itself
derives from runtime.stages.base.Stage. `registered()` lists the factories in pipeline order.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from runtime.stages.base import FrameResult, Stage, check_order

__all__ = ["AssemblyContext", "FrameResult", "Stage", "check_order", "register", "registered", "unregister"]


@dataclasses.dataclass
class AssemblyContext:
    """What a stage factory may use while building its stage."""

    say: Callable[[str], None]
    warn: Callable[[str], None]
    open_artifact: Callable[[Path], Any]  # a folder -> edge_mm.artifact.Artifact, with edge-mm-run's errors
    model_path: Path  # the run's --model artifact folder
    source_name: str = "stream"
    source_live: bool = False
    backend_options: Dict[str, Any] = dataclasses.field(default_factory=dict)  # more select_backend keywords


_FACTORIES: List[Any] = []
_builtin_done = False


def _ensure_builtin() -> None:
    # Lazily: the built-in stage modules import runtime.stages.base, which imports this package.
    global _builtin_done
    if _builtin_done:
        return
    _builtin_done = True
    import runtime.clip_stage
    import runtime.stages.saliency

    for factory in (runtime.stages.saliency, runtime.clip_stage):  # the registration lines, in pipeline order
        register(factory)


def register(factory: Any, *, before: Optional[str] = None) -> Any:
    """Add a stage factory (after the others, or before the one named `before`); returns it."""
    _ensure_builtin()
    for attr in ("NAME", "add_arguments", "from_args"):
        if not hasattr(factory, attr):
            raise TypeError(f"a stage factory needs {attr}; {factory!r} has none")
    if any(f.NAME == factory.NAME for f in _FACTORIES):
        raise ValueError(f"a stage factory named {factory.NAME!r} is already registered")
    names = [f.NAME for f in _FACTORIES]
    _FACTORIES.insert(names.index(before) if before in names else len(_FACTORIES), factory)
    return factory


def unregister(name: str) -> None:
    _ensure_builtin()
    _FACTORIES[:] = [f for f in _FACTORIES if f.NAME != name]


def registered() -> List[Any]:
    """The factories, in pipeline order."""
    _ensure_builtin()
    return list(_FACTORIES)
