"""Exceptions of the core's self-checks (core room).

They live apart from the engine modules because those compile to native
classes with mypyc (``make fast``), and a native class cannot subclass a
built-in exception; this module stays Python.
"""


class InvariantError(AssertionError):
    """Raised by ``Engine.check_invariants`` when internal state is inconsistent."""


class GroupError(AssertionError):
    """Raised by a group's ``check`` when its members are inconsistent."""
