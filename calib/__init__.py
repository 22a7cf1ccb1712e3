"""calib stage of edge-mm."""
