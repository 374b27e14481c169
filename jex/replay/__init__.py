"""jex.replay room."""
