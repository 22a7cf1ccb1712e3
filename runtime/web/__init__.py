"""The web pages: `edge-mm-run --serve` (live view, numbers, events, the memory's search) and
`edge-mm-index serve` (search any index). Starlette + uvicorn, torch-free; see docs/runtime.md.

address  --serve HOST:PORT parsing and binding      guard    Host, token, size checks (ASGI middleware)
server   uvicorn in a thread, header deadline       hubs     frame and event hand-overs from the pipeline
live     the live page and its sink                 memory   search and thumbnails over an index
upload   query images decoded within limits         app      shared routes and replies
"""
