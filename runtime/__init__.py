"""runtime stage of edge-mm."""
