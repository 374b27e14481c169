"""jex.snapshots room."""
