"""Stable reject and cancel reason codes (core room).

These codes are part of the public contract: clients switch on them, the
conformance adapter maps them, and they appear in the log-derived history.
Never rename one; add new codes at the end of their group.
"""

# Reject reasons (the ``reason`` of a ``rejected`` event), with their meaning.
REJECT_REASONS: dict[str, str] = {
    # Instruments.
    "instrument_exists": "an instrument with this symbol is already defined",
    "unknown_symbol": "the symbol is not a defined instrument",
    # Identity.
    "duplicate_client_id": "this (account, client_id) was already used by an accepted order or group",
    "unknown_order": "no open order with this id or client id belongs to the account",
    # Order entry.
    "expire_in_past": "a GTD order's expire_at is at or before the command's time",
    "stop_already_triggered": "a stop whose trigger condition already holds at entry",
    "call_phase_tif": "IOC, FOK and post-only orders are not accepted during a call auction",
    "post_only_would_cross": "a replace would move a post-only order across the book (reject mode)",
    "invalid_order": "the order is inconsistent with the engine state (e.g. a replace with nothing to change)",
    # Groups.
    "oco_price_relationship": "OCO legs breach limit > last > stop (sell) or limit < last < stop (buy)",
    "oco_legs_invalid": "OCO legs must be one limit and one stop/stop-limit order of equal side and quantity",
    "bracket_price_relationship": "bracket prices breach stop-loss < entry < take-profit (buy; mirrored for sell)",
    "bracket_entry_invalid": "a bracket entry must be a limit or market order",
    "condition_invalid": "a condition refers to an unknown symbol or is malformed",
    "child_rejected": "a bracket child could not be placed at activation",
    # Auctions.
    "auction_state": "auction open while already in call phase, or uncross outside a call phase",
}

# Cancel reasons (the ``reason`` of a ``cancelled`` event).
CANCEL_REASONS: dict[str, str] = {
    "user": "cancelled by a cancel command (of the order or of its group)",
    "ioc": "the unfilled remainder of an IOC or market order",
    "fok": "a fill-or-kill order that could not be filled in full (no trades, no side effects)",
    "oco": "the other leg of an OCO group was filled, triggered or cancelled",
    "bracket": "a bracket sibling or entry ended the group",
    "stp": "expired by self-trade prevention",
    "expired": "a GTD order whose expire_at was reached",
    "post_only": "a post-only order that would have crossed (reject mode)",
    "auction": "an unfilled market order after an auction uncross",
    "condition": "a conditional order whose pending group was cancelled",
}
