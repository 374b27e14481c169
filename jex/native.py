"""Which implementation of ``jex.core`` runs: mypyc-compiled or pure Python.

``make fast`` compiles the engine modules of ``jex/core`` with mypyc, in
place (``setup.py``, ``JEX_COMPILE=1``): each ``name.py`` gets a
``name.<abi>.so`` beside it, which Python's importer prefers. The pure-Python
sources stay the reference and stay tested; the compiled core must give
byte-identical events and digests (tests/test_compiled_core.py).

``JEX_CORE`` picks at import time (read here, never in ``jex/core``):

* unset or ``auto``: the compiled modules where they are built and fresh,
  else pure Python;
* ``pure``: pure Python even where compiled modules exist;
* ``compiled``: the compiled modules, or an error if they are not built.

A compiled module older than its source is stale: the whole core then falls
back to pure Python with a one-line warning (run ``make fast`` again).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
from pathlib import Path

ENV = "JEX_CORE"
CHOICES = ("auto", "pure", "compiled")
# The modules mypyc compiles (setup.py reads this list). The command, event
# and wire Structs (msgspec), the exceptions and the package __init__ stay
# Python.
COMPILED = (
    "analytics",
    "auction",
    "base",
    "book",
    "codec",
    "contingent",
    "decimal_grid",
    "engine",
    "prorata",
    "reasons",
    "state",
    "stops",
    "vpin",
)
CORE_DIR = Path(__file__).resolve().parent / "core"
GROUP = "jex.core._native"  # mypyc's shared library: jex/core/_native__mypyc.<abi>.so


class NativeCoreError(ImportError):
    """``JEX_CORE`` asks for something this installation cannot give."""


def built_modules() -> dict[str, Path]:
    """name -> compiled file, for the COMPILED modules built beside their sources."""
    found = {}
    for name in COMPILED:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = CORE_DIR / (name + suffix)
            if path.exists():
                found[name] = path
                break
    return found


def stale_modules(built: dict[str, Path]) -> list[str]:
    """Compiled modules missing, or older than their source."""
    out = []
    for name in COMPILED:
        path = built.get(name)
        source = CORE_DIR / f"{name}.py"
        if path is None or (source.exists() and source.stat().st_mtime > path.stat().st_mtime):
            out.append(name)
    return out


class _PureCoreFinder:
    """Meta-path finder that loads the COMPILED modules from their .py sources."""

    def find_spec(self, fullname: str, path=None, target=None):
        package, _, name = fullname.rpartition(".")
        if package != "jex.core" or name not in COMPILED:
            return None
        source = CORE_DIR / f"{name}.py"
        return importlib.util.spec_from_file_location(fullname, source) if source.exists() else None


_selected: str | None = None


def select() -> str:
    """Install the import policy ``JEX_CORE`` asks for (once, before
    ``jex.core`` is imported); returns ``"compiled"`` or ``"pure"``."""
    global _selected
    if _selected is not None:
        return _selected
    choice = os.environ.get(ENV, "auto") or "auto"
    if choice not in CHOICES:
        raise NativeCoreError(f"{ENV}={choice!r}: expected one of {', '.join(CHOICES)}")
    built = built_modules()
    if choice == "pure" or not built:
        if choice == "compiled":
            raise NativeCoreError(f"{ENV}=compiled but jex/core is not compiled (run `make fast`)")
        _selected = "pure"
    else:
        stale = stale_modules(built)
        if not stale:
            _selected = "compiled"
        elif choice == "compiled":
            raise NativeCoreError(f"{ENV}=compiled but the compiled core is stale or partial ({', '.join(stale)}); run `make fast`")
        else:
            print(f"jex: the compiled core is stale or partial ({', '.join(stale)}); using pure Python (run `make fast`)",
                  file=sys.stderr)
            _selected = "pure"
    if _selected == "pure" and built:
        sys.meta_path.insert(0, _PureCoreFinder())
    return _selected


def kind() -> str:
    """``"compiled"`` or ``"pure"``: what ``jex.core.engine`` actually is."""
    import jex.core.engine as engine

    return "compiled" if not str(engine.__file__).endswith(".py") else "pure"
