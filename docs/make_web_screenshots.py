#!/usr/bin/env python3
"""Regenerate docs/web-live.png and docs/web-index.png: the two web pages, as the browser tests see them.

    python docs/make_web_screenshots.py

Runs the two browser tests that take the pictures (tests/test_web_browser.py: a live run with the
demo CLIP and --index after a search for "a red object", and edge-mm-index serve on an index of
synthetic scenes) with EDGE_MM_SCREENSHOTS=docs/. Needs chromium and chromium-driver (Debian:
apt-get install chromium chromium-driver) and the demo CLIP weights.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    env = {**os.environ, "EDGE_MM_SCREENSHOTS": str(ROOT / "docs"), "PYTHONPATH": str(ROOT)}
    tests = "tests/test_web_browser.py::test_live_memory_search_shows_crops_of_the_queried_colour"
    tests += " tests/test_web_browser.py::test_index_serve_pages_through_results"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests.split()], cwd=ROOT, env=env
    )
    if done.returncode == 0:
        print("wrote docs/web-live.png and docs/web-index.png")
    return done.returncode


if __name__ == "__main__":
    raise SystemExit(main())
