"""jex.node room."""
