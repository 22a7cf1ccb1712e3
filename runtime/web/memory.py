"""Search a retrieval index from the browser: text or an uploaded image -> top-k items with thumbnails.

    memory = Memory("memory/", embedder)        # an index and the CLIP model that made it
    app routes: memory_routes(memory)           # /api/memory, /api/search, /api/search/image, /thumb/ID.jpg

A result's thumbnail is the JPEG stored with its row (`store.thumbnail(id)`: every crop the live
CLIP stage and `edge-mm-index add` index has one), else it is cut from the source file (an image
file, or a video frame at the row's time) to the row's box as the crop was cut for CLIP (an index
made before thumbnails were stored). A source file that is gone shows as missing, never as an
error page.
"""

from __future__ import annotations

import collections
import logging
import threading
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import cv2
import numpy as np

from edge_mm.errors import EdgeMMError, IndexStoreError, InputError
from runtime.retrieval.crop import DEFAULT_PAD, padded_square_crop
from runtime.retrieval.thumbnail import make_thumbnail

from .upload import MAX_UPLOAD_BYTES, UploadError, decode_upload

log = logging.getLogger("edge_mm.runtime.web")

MAX_K = 100
MAX_DEPTH = 1000  # (page + 1) * k may not go deeper than this
MAX_QUERY_CHARS = 300
_THUMB_CACHE = 512  # thumbnails cut from source files, kept
IMAGE_SEARCH_PATH = "/api/search/image"
BODY_LIMITS = {IMAGE_SEARCH_PATH: MAX_UPLOAD_BYTES}


def check_paging(k: Any, page: Any) -> Tuple[int, int]:
    try:
        k, page = int(k), int(page)
    except (TypeError, ValueError):
        raise InputError("k and page must be whole numbers, e.g. k=8&page=0") from None
    if not 1 <= k <= MAX_K:
        raise InputError(f"k={k} is out of range; give 1 to {MAX_K}")
    if page < 0 or (page + 1) * k > MAX_DEPTH:
        raise InputError(f"page={page} is out of range; pages go {MAX_DEPTH} results deep (page 0 is the first)")
    return k, page


class Memory:
    """An index opened for searching with its CLIP embedder; thread-safe.

    embed_lock: held around every embedding call, shared with whoever else uses the embedder (the
    live CLIP stage), since a backend runs one request at a time.
    """

    def __init__(self, index_path: Union[str, Path], embedder: Any, embed_lock: Optional[Any] = None) -> None:
        self.index_path = Path(index_path)
        self.embedder = embedder
        self.embed_lock = embed_lock or threading.Lock()
        self._lock = threading.Lock()
        self._store: Any = None
        self._searcher: Any = None
        self._thumbs: "collections.OrderedDict[int, bytes]" = collections.OrderedDict()

    # -- the index ----------------------------------------------------------------------------
    def _open(self) -> Any:
        from runtime.retrieval import open_search_index
        from runtime.retrieval.store import IndexStore

        if self._store is None:
            self._store = IndexStore(self.index_path, model_info=self.embedder.model_info, mode="r")
            self._searcher = open_search_index(self._store)
        return self._store

    def info(self) -> Dict[str, Any]:
        with self._lock:
            try:
                store = self._open()
            except IndexStoreError as exc:
                return {"index": str(self.index_path), "items": 0, "note": str(exc)}
            return {"index": str(self.index_path), "items": len(store), "model": store.model_info.name}

    # -- searching ----------------------------------------------------------------------------
    def search_text(self, text: str, k: int, page: int) -> Dict[str, Any]:
        text = (text or "").strip()
        if not text:
            raise InputError("the query is empty; type what to look for, e.g. 'a red mug'")
        if len(text) > MAX_QUERY_CHARS:
            raise InputError(f"the query is over {MAX_QUERY_CHARS} characters; shorten it")
        k, page = check_paging(k, page)
        with self.embed_lock:
            query = self.embedder.embed_texts([text])
        return self._search(query, k, page, {"text": text})

    def search_image(self, data: bytes, k: int, page: int) -> Dict[str, Any]:
        k, page = check_paging(k, page)
        image = decode_upload(data)
        with self.embed_lock:
            query = self.embedder.embed_images([image])
        return self._search(query, k, page, {"image": f"{image.shape[1]}x{image.shape[0]} upload"})

    def _search(self, query: np.ndarray, k: int, page: int, described: Dict[str, Any]) -> Dict[str, Any]:
        with self._lock:
            store = self._open()
            depth = (page + 1) * k
            scores, ids = self._searcher.search(query, depth + 1)  # one more tells whether a next page exists
            found = [(float(s), int(i)) for s, i in zip(scores[0], ids[0]) if i >= 0]
            more = len(found) > depth
            found = found[page * k : depth]
            rows = store.items([i for _, i in found]) if found else []
            total = len(store)
            results = [
                self._describe(page * k + n + 1, score, row) for n, ((score, _), row) in enumerate(zip(found, rows))
            ]
        return {"query": described, "k": k, "page": page, "items": total, "more": more, "results": results}

    def _describe(self, rank: int, score: float, row: Dict[str, Any]) -> Dict[str, Any]:
        extra = row.get("extra") or {}
        available, note = self._thumbnail_available(row)
        return {
            "rank": rank,
            "id": row["id"],
            "score": round(score, 4),
            "path": row["path"],
            "name": Path(row["path"]).name or row["path"],
            "source": row.get("source") or "",
            "frame_time": row.get("frame_time"),
            "frame": extra.get("frame"),
            "added_at": row.get("added_at"),
            "box": row.get("box"),
            "depth_m": extra.get("depth_m"),
            "label": extra.get("label"),
            "thumb": f"/thumb/{row['id']}.jpg" if available else None,
            "thumb_note": note,
        }

    # -- thumbnails ---------------------------------------------------------------------------
    def _stored(self, item_id: int) -> Optional[bytes]:
        stored = self._store.thumbnail(item_id)
        return stored if stored is not None else self._thumbs.get(item_id)

    def _thumbnail_available(self, row: Dict[str, Any]) -> Tuple[bool, str]:
        if row.get("has_thumbnail") or row["id"] in self._thumbs:
            return True, ""
        path = Path(row["path"])
        if row.get("source") not in ("image", "video"):
            return False, "no thumbnail kept for this item"
        if not path.is_file():
            return False, "source file missing"
        return True, ""

    def thumbnail(self, item_id: int) -> Tuple[Optional[bytes], str]:
        """(JPEG bytes, '') or (None, why not)."""
        with self._lock:
            store = self._open()
            if not 0 <= item_id < len(store):
                return None, f"no item {item_id} in this index"
            stored = self._stored(item_id)
            if stored is not None:
                return stored, ""
            row = store.items([item_id])[0]
        available, note = self._thumbnail_available(row)
        if not available:
            return None, note
        image = _read_source(row)
        if image is None:
            return None, "the source file could not be read"
        box = row.get("box")
        if box is not None:
            pad = float((row.get("extra") or {}).get("crop_pad", DEFAULT_PAD))
            image = padded_square_crop(image, tuple(int(round(v)) for v in box), pad)
        jpeg = make_thumbnail(image)
        with self._lock:
            self._thumbs[item_id] = jpeg
            while len(self._thumbs) > _THUMB_CACHE:
                self._thumbs.popitem(last=False)
        return jpeg, ""

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None


def _read_source(row: Dict[str, Any]) -> Optional[np.ndarray]:
    path = row["path"]
    if row.get("source") == "image":
        return cv2.imread(path, cv2.IMREAD_COLOR)
    capture = cv2.VideoCapture(path)
    try:
        if not capture.isOpened():
            return None
        capture.set(cv2.CAP_PROP_POS_MSEC, float(row.get("frame_time") or 0.0) * 1000.0)
        ok, frame = capture.read()
        return frame if ok else None
    finally:
        capture.release()


# --------------------------------------------------------------------------- routes


def _error(status: int, message: str):
    from starlette.responses import JSONResponse

    return JSONResponse({"error": message}, status_code=status, headers={"cache-control": "no-store"})


def memory_routes(memory: Memory) -> List[Any]:
    """The search API and thumbnails of `memory`, as Starlette routes."""
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    async def guarded(call, *args):
        try:
            return JSONResponse(await run_in_threadpool(call, *args), headers={"cache-control": "no-store"})
        except UploadError as exc:
            return _error(exc.status, str(exc))
        except EdgeMMError as exc:  # a bad query, k, page or an index problem: the server goes on
            return _error(400, str(exc))

    async def info(request):
        return JSONResponse(await run_in_threadpool(memory.info), headers={"cache-control": "no-store"})

    async def search(request):
        q = request.query_params
        return await guarded(memory.search_text, q.get("q", ""), q.get("k", "8"), q.get("page", "0"))

    async def search_image(request):
        q = request.query_params
        try:
            k, page = check_paging(q.get("k", "8"), q.get("page", "0"))
        except InputError as exc:
            return _error(400, str(exc))
        data = await request.body()  # the guard caps it at MAX_UPLOAD_BYTES
        return await guarded(memory.search_image, data, k, page)

    async def thumb(request):
        jpeg, note = await run_in_threadpool(memory.thumbnail, request.path_params["item_id"])
        if jpeg is None:
            return Response(note + "\n", status_code=404, media_type="text/plain")
        return Response(jpeg, media_type="image/jpeg", headers={"cache-control": "max-age=3600"})

    return [
        Route("/api/memory", info, methods=["GET"]),
        Route("/api/search", search, methods=["GET"]),
        Route(IMAGE_SEARCH_PATH, search_image, methods=["POST"]),
        Route("/thumb/{item_id:int}.jpg", thumb, methods=["GET"]),
    ]


__all__ = ["BODY_LIMITS", "MAX_K", "Memory", "check_paging", "memory_routes"]
