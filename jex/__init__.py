"""jex: an event-sourced exchange."""
