"""`edge-mm-index serve`: the search page for any index (folders, videos, recordings, live memories).

Runs until Ctrl-C or SIGTERM. The index is opened read-only, so an `add` may run beside it (new
items show up in the next search).
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

from edge_mm.errors import IndexStoreError, UsageError


def serve_index(args: Any) -> int:
    from runtime.retrieval.artifact_note import artifact_for_index, clip_identity
    from runtime.retrieval.embed import ClipEmbedder
    from runtime.retrieval.store import IndexStore

    from .address import parse_host_port
    from .live import index_page_app
    from .memory import BODY_LIMITS, MAX_K, Memory
    from .server import WebServer

    if not 1 <= args.k <= MAX_K:
        raise UsageError(f"-k {args.k} must be 1-{MAX_K}")
    host, port = parse_host_port(args.serve)
    index_path = Path(args.index)
    if not index_path.exists():
        raise IndexStoreError(
            f"no retrieval index at {index_path}; build one with edge-mm-index add --index {index_path} ..."
        )
    paths, model_info = clip_identity(artifact_for_index(index_path, args.model))
    with IndexStore(index_path, model_info=model_info, mode="r") as store:  # the model check, before loading it
        items = len(store)
    embedder = ClipEmbedder.open(
        paths.root, backend=args.backend, precision=args.precision, threads=args.threads, text="now"
    )
    memory = Memory(index_path, embedder)
    server = None
    stop = threading.Event()
    previous = (
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        if threading.current_thread() is threading.main_thread()
        else None
    )
    try:
        app = index_page_app(memory, f"{index_path} ({items} items, {model_info.name})", args.k)
        server = WebServer(app, host, port, token=args.serve_token, names=args.serve_name, body_limits=BODY_LIMITS)
        print(
            f"serving {server.url_with_token} - search page for {index_path} ({items} items); Ctrl-C stops", flush=True
        )
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        if server is not None:
            server.close()
        memory.close()
        embedder.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0
