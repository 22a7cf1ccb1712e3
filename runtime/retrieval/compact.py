"""Reclaim the space of removed rows: copy the live rows into a new index aside, then rename it in.

Order (each step is safe to be killed after):

1. `.NAME.compact/` is built next to the index, from scratch, holding the writer lock of the old
   index (no add runs meanwhile): live vectors, metadata, thumbnails and add times, ids renumbered
   densely, a new index uuid (so every derived search graph of the old ids is rebuilt, never
   reused), the artifact note copied. Its files are fsync'ed, then `COMPACT_DONE` is written.
2. `NAME/` is renamed to `.NAME.compact-old/`.
3. `.NAME.compact/` is renamed to `NAME/`; `.NAME.compact-old/` is deleted.

`store.recover_interrupted_compact` runs whenever an IndexStore is opened: with NAME missing it rolls
forward (the new index is complete) or back (it is not); it deletes leftovers only once NAME is in
place. So a kill at any point leaves an index that opens, either as it was or compacted.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable, Dict, Optional, Union

import numpy as np

from runtime.retrieval.store import COMPACT_DONE, IndexStore, _fsync_dir, compact_aside

# Files that travel with the index; everything else in the folder is derived or transient.
_KEPT_FILES = ("clip_artifact.json",)
_COPY_ROWS = 16384


def compact(
    path: Union[str, Path], progress: bool = True, at_step: Optional[Callable[[str], None]] = None
) -> Dict[str, int]:
    """Rewrite the index at `path` without its removed rows; returns {"kept": n, "removed": m}.

    `at_step` is called with "built" (new index complete, nothing renamed) and "moved-aside" (the
    old index renamed away, the new one not yet in place): the kill tests pause there.
    """
    from tqdm import tqdm

    path = Path(path)
    new, old = compact_aside(path, "compact"), compact_aside(path, "compact-old")
    with IndexStore(path, mode="r") as probe:
        model = probe.model_info
    with IndexStore(path, model_info=model, mode="a") as store:  # the writer lock: no adds meanwhile
        shutil.rmtree(new, ignore_errors=True)  # a compact killed while building
        rows = len(store)
        deleted = store.deleted_ids()
        live = np.setdiff1d(np.arange(rows, dtype=np.int64), deleted)
        fresh = IndexStore(new, dim=store.dim, model_info=model, mode="a")
        try:
            vectors = store.vectors()
            db = store._db
            with tqdm(total=len(live), desc="compact", unit="row", disable=not progress) as bar:
                for lo in range(0, len(live), _COPY_ROWS):
                    ids = live[lo : lo + _COPY_ROWS]
                    marks = ",".join("?" * len(ids))
                    got = {
                        int(r[0]): r[1:]
                        for r in db.execute(
                            "SELECT id, content_hash, path, frame_time, box, source, extra, thumbnail, added_at "
                            f"FROM items WHERE id IN ({marks})",
                            [int(i) for i in ids],
                        )
                    }
                    rows_meta = [got[int(i)] for i in ids]
                    start = len(fresh)
                    fresh._append_vectors(start, np.ascontiguousarray(vectors[ids]))
                    fresh._insert_rows(start, [r[:7] for r in rows_meta], added_at=[r[7] for r in rows_meta])
                    bar.update(len(ids))
        finally:
            fresh.close()
        for name in _KEPT_FILES:
            if (path / name).is_file():
                shutil.copy2(path / name, new / name)
        for name in os.listdir(new):
            with open(new / name, "rb") as fh:
                os.fsync(fh.fileno())
        done = new / COMPACT_DONE
        done.write_text(f"{len(live)} rows kept of {rows}\n")
        with open(done, "rb") as fh:
            os.fsync(fh.fileno())
        _fsync_dir(new)
        if at_step is not None:
            at_step("built")
        os.rename(path, old)
        if at_step is not None:
            at_step("moved-aside")
    # The old folder (and its lock file) is aside now; the writer lock ends with it.
    os.rename(new, path)
    _fsync_dir(path.parent)
    (path / COMPACT_DONE).unlink()
    shutil.rmtree(old, ignore_errors=True)
    return {"kept": int(len(live)), "removed": int(rows - len(live))}
