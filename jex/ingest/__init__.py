"""Importers that turn external market data into jex commands (ingest room).

ingest/ may import core/ only (for constants and the engine's read surface);
it never opens a node itself: the driver functions take an already opened
``Exchange`` (duck-typed), so the CLI and the tests decide where data goes.
"""
