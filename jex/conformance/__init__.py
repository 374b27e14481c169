"""Conformance adapters for external test suites.

``serve(stdin, stdout) -> int`` speaks the tracebook-conformance NDJSON
protocol (version 1) over ``jex.core.Engine``; run it as
``python -m jex.conformance serve``. See docs/conformance.md.
"""

from .adapter import REASON_CODES, JexAdapter, serve, state_hash

__all__ = ["REASON_CODES", "JexAdapter", "serve", "state_hash"]
