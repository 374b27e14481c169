"""jex.replay room: everything rebuilt from the log (may import core, journal, snapshots).

    rebuild.py     replay records onto an engine (seq and ts from each record)
    recover.py     newest usable snapshot + tail; log views; retention and WAL pruning
    timetravel.py  the state at a seq or a time (`--at`)
    verify.py      genesis replay == each snapshot + tail == recovery (`replay --verify`)
    audit.py       the LMDB audit index, caught up from the log, and its queries
"""
