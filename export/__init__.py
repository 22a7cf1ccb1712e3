"""export stage of edge-mm."""
