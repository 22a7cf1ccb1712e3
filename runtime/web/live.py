"""The live page of `edge-mm-run --serve`: the annotated stream, live numbers, events, CLIP and the memory.

    view = LiveView("127.0.0.1", 8080, stats=stats, controls=controls, title="cdinet-s on synthetic")
    pipeline sinks: [..., view]                  # write(result) hands the frame over, never waits
    view.attach_clip(clip_stage, index_path)     # with --clip: label, query hits; with --index: search
    view.write_event(event)                      # each of CLIP's events, from the pipeline's loop
    view.close()

Routes: / (the page), /stream (MJPEG), /frame.jpg, /events (server-sent events: a `stats` message
twice a second and every new `event`), /stats (the run's summary as JSON), /api/control (pause,
overlay), /health, and with a memory the search API of runtime.web.memory.

Events on the page: the salient object appearing and being lost, CLIP's query matches and label
changes, crops added to the memory, pause and resume. Per-frame lines stay in --events.
"""

from __future__ import annotations

import json
import time
from typing import Any, Dict, Iterable, List, Optional

from runtime.sinks.base import Sink

from .app import MAX_SSE_CLIENTS, MAX_STREAM_CLIENTS, base_routes, make_app, text_reply
from .hubs import EventHub, FrameHub
from .memory import BODY_LIMITS, Memory, memory_routes
from .server import WebServer

BOUNDARY = "edgemmframe"
STATS_PERIOD_S = 0.5
CONTROL_BODY_LIMIT = 1024


class LiveView(Sink):
    """A sink that serves the live page (see module docstring); starts serving when made."""

    name = "web"

    def __init__(
        self,
        host: str,
        port: int,
        *,
        stats: Any,
        controls: Any,
        title: str = "edge-mm-run",
        token: Optional[str] = None,
        names: Iterable[str] = (),
        keep_events: int = 50,
    ) -> None:
        self.stats = stats
        self.controls = controls
        self.title = title
        self.frames = FrameHub()
        self.events = EventHub(keep_events)
        self.clip: Any = None
        self.memory: Optional[Memory] = None
        self.object: Dict[str, Any] = {}
        self._had_object: Optional[bool] = None
        self._last_label: Optional[str] = None
        self.sse_clients = 0
        self._closed = False
        self.app = make_app(self._routes())
        try:
            self.server = WebServer(
                self.app, host, port, token=token, names=names, body_limits={**BODY_LIMITS, "/api/control": 1024}
            )
        except BaseException:
            self.frames.close()
            raise

    @property
    def url(self) -> str:
        return self.server.url

    # -- the pipeline's side ---------------------------------------------------------------------
    def write(self, result: Any) -> None:
        self.frames.offer(result.image)
        saliency = getattr(result, "saliency", None)
        if saliency is None:  # a pipeline of stages keeps each stage's result by name
            saliency = getattr(result, "values", {}).get("saliency")
        if saliency is None:
            return
        present = saliency.box is not None
        self.object = {"index": result.frame.index, **saliency.to_event()}
        if present != self._had_object:
            if present or self._had_object is not None:
                self.events.publish(
                    {"type": "object", "what": "appeared" if present else "lost", "time": time.time(), **self.object}
                )
            self._had_object = present

    def attach_clip(self, clip: Any, index_path: Optional[str] = None) -> None:
        """Show CLIP's label and query; with an index, add the search box (the index is searched read-only)."""
        self.clip = clip
        if index_path is not None:
            self.memory = Memory(index_path, clip.embedder, getattr(clip, "embed_lock", None))
            self.app.router.routes[:0] = memory_routes(self.memory)

    def write_event(self, event: Dict[str, Any]) -> None:
        """A stage's event (CLIP's): query matches, label changes and crops added to the memory go to the page."""
        kind = event.get("type")
        if kind == "clip_query":
            self.events.publish(event)
        elif kind == "clip":
            label = event.get("label")
            if event.get("indexed"):
                self.events.publish({**event, "type": "memory"})
            elif label is not None and label != self._last_label:
                self.events.publish({**event, "type": "label"})
            self._last_label = label if label is not None else self._last_label

    # -- what the page reads -----------------------------------------------------------------------
    def snapshot(self) -> Dict[str, Any]:
        current = self.stats.current()
        out: Dict[str, Any] = {
            "title": self.title,
            "frames": self.stats.frames,
            "fps": round(current["fps"], 2),
            "latency_p50_ms": current["latency_p50_ms"],
            "latency_p95_ms": current["latency_p95_ms"],
            "stages_ms": self.stats.recent_stage_ms(),
            "dropped": self.stats.counters.get("dropped", 0),
            "object": self.object,
            "paused": bool(self.controls.paused),
            "overlay": bool(self.controls.show_heatmap),
            "viewers": self.frames.clients,
            "memory": self.memory is not None,
        }
        clip = self.clip
        if clip is not None:
            latest = clip.latest
            counts = clip.stats()
            out["clip"] = {
                "label": getattr(latest, "label", None),
                "prob": getattr(latest, "prob", None),
                "query": clip.query,
                "query_score": getattr(latest, "query_score", None),
                "query_match": bool(getattr(latest, "query_match", False)),
                "query_events": counts.get("query_events", 0),
                "indexed": counts.get("indexed", 0),
                "age_s": round(time.time() - latest.wall_time, 1) if latest is not None else None,
            }
        return out

    def _routes(self) -> List[Any]:
        from starlette.responses import JSONResponse, Response, StreamingResponse
        from starlette.routing import Route

        frames, events = self.frames, self.events
        part_head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: ".encode()

        async def stream(request):
            media = f"multipart/x-mixed-replace; boundary={BOUNDARY}"
            if request.method == "HEAD":
                return Response(b"", media_type=media, headers={"cache-control": "no-store"})
            if frames.clients >= MAX_STREAM_CLIENTS:
                return text_reply(503, f"{MAX_STREAM_CLIENTS} viewers are watching already; close one and retry")

            async def parts():
                frames.clients += 1
                try:
                    seen = 0
                    while not frames.closed:
                        jpeg, seq = await frames.next_jpeg(seen)
                        if jpeg is not None:
                            seen = seq
                            yield part_head + str(len(jpeg)).encode() + b"\r\n\r\n" + jpeg + b"\r\n"
                finally:
                    frames.clients -= 1

            return StreamingResponse(parts(), media_type=media, headers={"cache-control": "no-store"})

        async def frame_jpg(request):
            if frames.jpeg is None:
                return text_reply(503, "no frame yet; retry in a moment")
            return Response(frames.jpeg, media_type="image/jpeg", headers={"cache-control": "no-store"})

        async def sse(request):
            media = "text/event-stream"
            if request.method == "HEAD":
                return Response(b"", media_type=media, headers={"cache-control": "no-store"})
            if self.sse_clients >= MAX_SSE_CLIENTS:
                return text_reply(503, f"{MAX_SSE_CLIENTS} pages are open already; close one and retry")

            async def messages():
                self.sse_clients += 1
                try:
                    seen, next_stats = 0, 0.0
                    yield "retry: 2000\n\n"
                    while not self._closed:
                        for number, event in events.since(seen):
                            seen = number
                            yield f"event: event\ndata: {json.dumps(event, default=str)}\n\n"
                        now = time.monotonic()
                        if now >= next_stats:
                            next_stats = now + STATS_PERIOD_S
                            yield f"event: stats\ndata: {json.dumps(self.snapshot(), default=str)}\n\n"
                        await events.wait(seen, max(0.0, next_stats - time.monotonic()))
                finally:
                    self.sse_clients -= 1

            return StreamingResponse(
                messages(), media_type=media, headers={"cache-control": "no-store", "x-accel-buffering": "no"}
            )

        async def summary(request):
            return JSONResponse(self.stats.summary(), headers={"cache-control": "no-store"})

        async def info(request):
            return JSONResponse(self.snapshot(), headers={"cache-control": "no-store"})

        async def control(request):
            try:
                body = json.loads(await request.body() or b"{}")
            except ValueError:
                return text_reply(400, 'send JSON such as {"paused": true} or {"overlay": false}')
            if not isinstance(body, dict) or not body or set(body) - {"paused", "overlay"}:
                return text_reply(400, 'send JSON with "paused" and/or "overlay" set to true or false')
            if any(not isinstance(v, bool) for v in body.values()):
                return text_reply(400, '"paused" and "overlay" take true or false')
            if "paused" in body and body["paused"] != self.controls.paused:
                self.controls.paused = body["paused"]
                events.publish(
                    {"type": "control", "what": "paused" if body["paused"] else "resumed", "time": time.time()}
                )
            if "overlay" in body:
                self.controls.show_heatmap = body["overlay"]
            return JSONResponse({"paused": self.controls.paused, "overlay": self.controls.show_heatmap})

        return [
            *base_routes("live.html"),
            Route("/stream", stream, methods=["GET"]),
            Route("/frame.jpg", frame_jpg, methods=["GET"]),
            Route("/events", sse, methods=["GET"]),
            Route("/stats", summary, methods=["GET"]),
            Route("/api/info", info, methods=["GET"]),
            Route("/api/control", control, methods=["POST"]),
        ]

    # -- lifetime ----------------------------------------------------------------------------------
    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.frames.close()
        self.server.close()
        if self.memory is not None:
            self.memory.close()

    def describe(self) -> str:
        return f"web page {self.server.url}"


def index_page_app(memory: Memory, title: str, k: int = 8) -> Any:
    """The search page alone, for `edge-mm-index serve`."""
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def info(request):
        return JSONResponse({"title": title, "memory": True, "k": k}, headers={"cache-control": "no-store"})

    return make_app([*base_routes("memory.html"), Route("/api/info", info, methods=["GET"]), *memory_routes(memory)])


__all__ = ["BOUNDARY", "LiveView", "index_page_app"]
