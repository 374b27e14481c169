"""The cyclic GC and a recovered node's long-lived heap (room: jex.snapshots).

A node that recovers a large state holds millions of objects that live as
long as the process: the orders, their book links, the client-id registry.
CPython's collector counts the objects of its oldest generation only at a
full collection, and the first full collection after a recovery (due once
the objects surviving into that generation pass a quarter of what the last
full collection counted: early in the node's life) traverses all of them:
~0.3-0.8 s at a million resting orders, a pause in the middle of trading.
Later full collections do it again, each time the survivors pass a quarter
of the (then large) count.

The policy: once recovery is done, ``freeze_long_lived(engine)`` moves every
object the collector tracks into its permanent generation (``gc.freeze()``,
one list splice, no traversal), after a collection of the two young
generations (cheap: the restored objects are already in the oldest one, see
``store._keep_as_old``) so that young garbage is not frozen with them. No
collection looks at frozen objects again; new objects are collected as
usual. It does nothing below ``LONG_LIVED_OBJECTS_MIN`` objects, where a
full collection is short (and tests that open many small nodes in one
process keep the collector as it was).

``fork.BackgroundJob`` freezes every object before it forks a snapshot
child (so the parent's collections do not copy pages the child shares) and
hands them back with ``gc.unfreeze()`` when it reaps the child; unfreezing
is all or nothing, so while the policy holds it keeps them frozen instead
(``long_lived()``): whatever survived to a snapshot is long-lived too. And
``store.load`` does not touch the generations while anything is frozen.

What can leak. A frozen object is still freed by reference counting the
moment its last reference goes; only what the cyclic collector alone can
free is kept: frozen objects that later become garbage *in a cycle*. The
engine's live state forms cycles, and jex/core breaks each of them when
its part is done, so that nothing the engine drops while it runs is cyclic
garbage (tests/test_core_cycles.py holds it to that):

* a resting order and its level and queue neighbours (``prev``/``next``,
  ``level``, ``Level.head``/``tail``): ``Level.unlink`` clears the order's
  links whenever an order leaves the book, and an empty level holds no
  order;
* a contingent group and its members (``Order.group`` <-> ``OcoGroup.legs``,
  ``BracketGroup.entry/tp/sl``, ``ConditionalGroup.order``): when a group
  closes (``_maybe_close``: its last live member filled or ended, or the
  group cancelled) it leaves ``engine.groups`` and its members' ``group``
  links are cleared, so the group and its done members go by reference
  counting; a conditional's order is unlinked when it is released;
* a trailing stop and its extreme group (``order.trail_group`` <->
  ``_TrailGroup.members``): the link is cleared whenever the group lets go
  of the order (fired, cancelled, expired), and a group merged into
  another is left with no order pointing at it.

Anything else of the process frozen while alive and later dropped in a
cycle (an exception with its traceback held at that moment, say) stays,
and so does a whole engine dropped while frozen: its live orders and
groups are in the cycles above, and it holds its own bound methods
(``Engine._handlers``). So a node that closes while its process goes on
(tests, benchmarks, a gateway reopening) calls
``release_long_lived()``, which hands everything back to the collector
(its next full collection then traverses it all, once, and frees it).
"""

from __future__ import annotations

import gc
from typing import Any

# Below this many long-lived objects a full collection takes a few ms: no freezing.
LONG_LIVED_OBJECTS_MIN = 100_000

_frozen = False  # whether freeze_long_lived froze the heap (and release_long_lived has not thawed it)


def long_lived() -> bool:
    """Whether the policy holds: the heap was frozen after a recovery."""
    return _frozen


def long_lived_objects(engine: Any) -> int:
    """A cheap lower bound of the objects a full collection would traverse
    in ``engine``: its live orders and client-id registry entries (each at
    least one tracked object or a slot of a tracked container). O(accounts)."""
    return len(engine.orders) + sum(len(ids) for ids in engine.client_ids.values())


def freeze_long_lived(engine: Any, objects_min: int | None = None) -> bool:
    """Call once a recovered ``engine`` is in place (and nothing else big
    and short-lived is held): collect the young generations, then freeze
    every tracked object, so that no later collection traverses them.
    Returns whether it froze (False below ``objects_min``, by default
    ``LONG_LIVED_OBJECTS_MIN``; see the module
    docstring for what it may keep alive). O(young objects)."""
    global _frozen
    if objects_min is None:
        objects_min = LONG_LIVED_OBJECTS_MIN
    if long_lived_objects(engine) < objects_min:
        return False
    gc.collect(1)
    gc.freeze()
    _frozen = True
    return True


def release_long_lived() -> None:
    """Undo ``freeze_long_lived``: every frozen object goes back to the
    collector's oldest generation (its next full collection traverses them,
    and frees the cyclic garbage among them). For tests, and for a process
    that is done with its recovered state. O(1)."""
    global _frozen
    if _frozen:
        _frozen = False
        gc.unfreeze()
