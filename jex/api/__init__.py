"""jex.api room."""
