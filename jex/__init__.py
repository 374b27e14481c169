"""jex: an event-sourced exchange."""

from . import native as _native

_native.select()
