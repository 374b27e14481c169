"""jex.cli room."""
