"""Which implementation runs: mypyc-compiled or pure Python (for ``jex.core``
and the journal's read path).

``make fast`` compiles the modules listed in GROUPS with mypyc, in place
(``setup.py``, ``JEX_COMPILE=1``): each ``name.py`` gets a ``name.<abi>.so``
beside it, which Python's importer prefers. Two groups, each one shared
library: the engine modules of ``jex/core``, and the record framing of
``jex/journal`` (``record``: the verifying walk and the replay's fused loop,
the read path of rebuild and recovery). The pure-Python sources stay the
reference and stay tested; the compiled modules must give byte-identical
events, digests, records and errors (tests/test_compiled_core.py).

``JEX_CORE`` picks at import time (read here, never in the compiled
packages), for every group alike:

* unset or ``auto``: a group's compiled modules where they are all built and
  fresh, else its pure Python;
* ``pure``: pure Python even where compiled modules exist;
* ``compiled``: the compiled modules of every group, or an error if any
  group is not built (or stale).

A compiled module older than its source is stale: its whole group then
falls back to pure Python with a one-line warning (run ``make fast`` again).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
from pathlib import Path
from typing import NamedTuple

ENV = "JEX_CORE"
CHOICES = ("auto", "pure", "compiled")
_JEX_DIR = Path(__file__).resolve().parent


class Group(NamedTuple):
    """Modules of one package that mypyc compiles into one shared library."""

    package: str  # e.g. "jex.core"
    modules: tuple[str, ...]
    library: str  # mypyc's group name: <package>/_native__mypyc.<abi>.so

    @property
    def directory(self) -> Path:
        return _JEX_DIR.joinpath(*self.package.split(".")[1:])

    @property
    def label(self) -> str:
        return "core" if self.package == "jex.core" else self.package


# The engine modules of jex/core. The command, event and wire Structs
# (msgspec), the exceptions and the package __init__ stay Python.
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
    "registry",
    "state",
    "stops",
    "vpin",
)
GROUP = "jex.core._native"  # mypyc's shared library: jex/core/_native__mypyc.<abi>.so
CORE_DIR = _JEX_DIR / "core"
CORE = Group("jex.core", COMPILED, GROUP)
# The journal's record framing: RecordCursor (every read of the log) and
# its fused replay loop, the encoder of the write path.
JOURNAL = Group("jex.journal", ("record",), "jex.journal._native")
GROUPS = (CORE, JOURNAL)  # setup.py builds these


class NativeCoreError(ImportError):
    """``JEX_CORE`` asks for something this installation cannot give."""


def built_modules(group: Group = CORE) -> dict[str, Path]:
    """name -> compiled file, for the group's modules built beside their sources."""
    found = {}
    for name in group.modules:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = group.directory / (name + suffix)
            if path.exists():
                found[name] = path
                break
    return found


def library_file(group: Group) -> Path | None:
    """The group's shared library (``_native__mypyc.<abi>.so``), if built."""
    stem = group.library.rpartition(".")[2] + "__mypyc"
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = group.directory / (stem + suffix)
        if path.exists():
            return path
    return None


def stale_modules(built: dict[str, Path], group: Group = CORE) -> list[str]:
    """The group's compiled modules missing, or older than their source.

    A module's build time is that of its own file or of the group's shared
    library, whichever is newer: the library holds the compiled code, and a
    rebuild rewrites it while leaving a module's small shim file untouched
    (same bytes) when only the code changed."""
    library = library_file(group)
    library_mtime = library.stat().st_mtime if library is not None else 0.0
    out = []
    for name in group.modules:
        path = built.get(name)
        source = group.directory / f"{name}.py"
        if path is None or (source.exists() and source.stat().st_mtime > max(path.stat().st_mtime, library_mtime)):
            out.append(name)
    return out


class _PureFinder:
    """Meta-path finder that loads the given groups' modules from their .py sources."""

    def __init__(self, groups: list[Group]) -> None:
        self._groups = {group.package: group for group in groups}

    def find_spec(self, fullname: str, path=None, target=None):
        package, _, name = fullname.rpartition(".")
        group = self._groups.get(package)
        if group is None or name not in group.modules:
            return None
        source = group.directory / f"{name}.py"
        return importlib.util.spec_from_file_location(fullname, source) if source.exists() else None


_selected: dict[str, str] = {}


def select() -> str:
    """Install the import policy ``JEX_CORE`` asks for (once, before any
    compiled package is imported); returns what the core runs,
    ``"compiled"`` or ``"pure"`` (``selected()`` has every group's)."""
    if _selected:
        return _selected[CORE.package]
    choice = os.environ.get(ENV, "auto") or "auto"
    if choice not in CHOICES:
        raise NativeCoreError(f"{ENV}={choice!r}: expected one of {', '.join(CHOICES)}")
    chosen = {group.package: _choose(group, choice) for group in GROUPS}
    pure_but_built = [group for group in GROUPS if chosen[group.package] == "pure" and built_modules(group)]
    if pure_but_built:
        sys.meta_path.insert(0, _PureFinder(pure_but_built))
    _selected.update(chosen)
    return _selected[CORE.package]


def _choose(group: Group, choice: str) -> str:
    built = built_modules(group)
    if choice == "pure" or not built:
        if choice == "compiled":
            raise NativeCoreError(f"{ENV}=compiled but {group.package} is not compiled (run `make fast`)")
        return "pure"
    stale = stale_modules(built, group)
    if not stale:
        return "compiled"
    what = f"the compiled {group.label}"
    if choice == "compiled":
        raise NativeCoreError(f"{ENV}=compiled but {what} is stale or partial ({', '.join(stale)}); run `make fast`")
    print(f"jex: {what} is stale or partial ({', '.join(stale)}); using pure Python (run `make fast`)", file=sys.stderr)
    return "pure"


def selected() -> dict[str, str]:
    """package -> ``"compiled"`` or ``"pure"``, as select() chose."""
    select()
    return dict(_selected)


def kind(group: Group = CORE) -> str:
    """``"compiled"`` or ``"pure"``: what the group's first module (for the
    core, ``jex.core.engine``) actually is."""
    module = importlib.import_module(f"{group.package}.{'engine' if group is CORE else group.modules[0]}")
    return "compiled" if not str(module.__file__).endswith(".py") else "pure"
