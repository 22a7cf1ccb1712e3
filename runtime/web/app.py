"""What both pages share: the static files, /health, error replies and the stream-client caps."""

from __future__ import annotations

from pathlib import Path
from typing import Any, List

STATIC_DIR = Path(__file__).resolve().parent / "static"
MAX_STREAM_CLIENTS = 32  # MJPEG viewers; beyond this a clear 503
MAX_SSE_CLIENTS = 16  # pages listening to stats and events


def text_reply(status: int, message: str) -> Any:
    from starlette.responses import PlainTextResponse

    return PlainTextResponse(message.rstrip("\n") + "\n", status_code=status, headers={"cache-control": "no-store"})


def base_routes(page: str) -> List[Any]:
    """`/` (the page file `page` from static/), /static/*, /health."""
    from starlette.responses import FileResponse, JSONResponse
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    async def index(request):
        return FileResponse(STATIC_DIR / page, media_type="text/html", headers={"cache-control": "no-store"})

    async def health(request):
        return JSONResponse({"ok": True}, headers={"cache-control": "no-store"})

    return [
        Route("/", index, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]


def make_app(routes: List[Any]) -> Any:
    from starlette.applications import Starlette

    async def not_found(request, exc):
        status = getattr(exc, "status_code", 404)
        detail = getattr(exc, "detail", "") or "not found"
        if status == 404:
            detail = f"no such page: {request.url.path[:200]}"
        return text_reply(status, detail)

    return Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found})
