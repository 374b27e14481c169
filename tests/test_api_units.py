"""Units of the network edge: key store, rate limiter, WebSocket queues, the
body schemas, isolation of events, the `jex keys` CLI."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys

import msgspec
import pytest

from jex.api import frames, schemas
from jex.api.hub import Subscriber
from jex.api.keys import KeyRing, KeyStore, KeyStoreError, split_key
from jex.api.limits import FRAME_BYTES_MAX, RateLimiter, retry_after_header
from jex.api.service import ApiError, Service
from jex.core import codec as wire

# ------------------------------------------------------------------- keys


def test_keys_are_stored_hashed_and_verified(tmp_path):
    store = KeyStore(tmp_path)
    record, key = store.add("A")
    admin_record, admin_key = store.add("ops", admin=True)
    text = (tmp_path / "keys.json").read_text()
    # Only hashes on disk. (The secret is URL-safe base64 and may hold "_":
    # take it whole, as the server does; split("_")[2] was "" one run in ~30.)
    secrets_ = [split_key(k)[1] for k in (key, admin_key)]
    assert all(len(s) >= 20 and s not in text for s in secrets_), secrets_
    assert stat.S_IMODE(os.stat(tmp_path / "keys.json").st_mode) == 0o600
    ring = KeyRing(store)
    principal = ring.authenticate(key)
    assert principal is not None and principal.account == "A" and not principal.admin
    assert ring.authenticate(admin_key).admin
    tampered = key[:-1] + ("A" if key[-1] != "A" else "B")
    for bad in (tampered, "", "jex", f"jex_{record.key_id}_", "x" * 500, key.replace("jex_", "xyz_")):
        assert ring.authenticate(bad) is None


def test_revoked_keys_stop_working_after_reload(tmp_path):
    store = KeyStore(tmp_path)
    record, key = store.add("A")
    ring = KeyRing(store, reload_interval_s=0.0)
    assert ring.authenticate(key) is not None
    store.revoke(record.key_id)
    assert ring.authenticate(key) is None
    with pytest.raises(KeyStoreError, match="already revoked"):
        store.revoke(record.key_id)
    with pytest.raises(KeyStoreError, match="no key"):
        store.revoke("feedfeedfeed")
    assert [r.revoked_at is not None for r in store.load()] == [True]


def test_bad_accounts_and_files_are_refused(tmp_path):
    store = KeyStore(tmp_path)
    for account in ("", " A", "x" * 65, "a\nb"):
        with pytest.raises(KeyStoreError):
            store.add(account)
    (tmp_path / "keys.json").write_text("{not json")
    with pytest.raises(KeyStoreError, match="unreadable"):
        store.load()


def test_a_broken_keys_file_keeps_the_last_good_keys(tmp_path, capsys):
    store = KeyStore(tmp_path)
    _, key = store.add("A")
    ring = KeyRing(store, reload_interval_s=0.0)
    (tmp_path / "keys.json").write_text("{broken")
    assert ring.authenticate(key) is not None
    assert "keeping previous keys" in capsys.readouterr().err


def test_split_key_shapes():
    assert split_key("jex_0123456789ab_secret") == ("0123456789ab", "secret")
    assert split_key("jex_0123456789ab") is None and split_key("jex_short_secret") is None


def test_keys_cli_add_list_revoke(tmp_path):
    def jex(*args):
        return subprocess.run([sys.executable, "-m", "jex", "--data-dir", str(tmp_path), *args],
                              capture_output=True, text=True, timeout=60)

    added = jex("--json", "keys", "add", "A", "--admin")
    assert added.returncode == 0, added.stderr
    made = json.loads(added.stdout)
    assert made["account"] == "A" and made["admin"] is True and made["key"].startswith("jex_")
    listed = jex("--json", "keys", "list")
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert rows[0]["key_id"] == made["key_id"] and "key" not in rows[0] and made["key"] not in listed.stdout
    assert jex("keys", "revoke", made["key_id"]).returncode == 0
    again = jex("keys", "revoke", made["key_id"])
    assert again.returncode == 2 and again.stderr.count("\n") == 1 and "already revoked" in again.stderr
    bad = jex("keys", "add", "")
    assert bad.returncode == 2 and "account" in bad.stderr


# ------------------------------------------------------------ rate limits


def test_token_bucket_allows_burst_then_rate():
    now = [0.0]
    limiter = RateLimiter(rate_per_s=2.0, burst=3.0, clock=lambda: now[0])
    assert [limiter.take("k") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.take("k")
    assert wait == pytest.approx(0.5)
    assert limiter.take("other") == 0.0  # separate buckets
    now[0] = 0.5
    assert limiter.take("k") == 0.0
    assert limiter.take("k") > 0
    now[0] = 100.0
    assert [limiter.take("k") for _ in range(3)] == [0.0, 0.0, 0.0]  # refills to the burst, no more
    assert limiter.take("k") > 0
    assert retry_after_header(0.01) == "1" and retry_after_header(2.2) == "3"


def test_rate_buckets_are_bounded():
    limiter = RateLimiter(rate_per_s=1.0, burst=1.0, buckets_max=10)
    for i in range(100):
        limiter.take(f"addr{i}")
    assert len(limiter._buckets) == 10


# -------------------------------------------------------------- WebSocket


def test_slow_consumer_queue_is_bounded_and_says_what_it_dropped():
    async def scenario():
        sub = Subscriber(queue_max=4)
        for i in range(10):
            sub.offer({"type": "trade", "seq": i})
        assert len(sub.queue) == 4
        batch = await sub.take()
        assert batch[0] == {"type": "dropped", "count": 6}
        assert [m["seq"] for m in batch[1:]] == [6, 7, 8, 9]
        sub.offer({"type": "trade", "seq": 10})
        assert await sub.take() == [{"type": "trade", "seq": 10}]

    asyncio.run(scenario())


# ------------------------------------------------------------ bodies, frames


@pytest.mark.parametrize("body,source", [(schemas.OrderBody, wire.WOrder), (schemas.OcoBody, wire.WOco),
                                         (schemas.BracketBody, wire.WBracket),
                                         (schemas.ConditionalBody, wire.WConditional),
                                         (schemas.InstrumentBody, wire.WInstrument)])
def test_body_schemas_mirror_the_codec(body, source):
    names = {f.name for f in msgspec.structs.fields(body)}
    assert names == {f.name for f in msgspec.structs.fields(source)} - {"ts"} | {"type"}
    required = {f.name for f in msgspec.structs.fields(body) if f.required}
    assert required == {f.name for f in msgspec.structs.fields(source) if f.required} - {"account"}


class _Principal:
    key_id, account, admin = "k", "A", False


def test_commands_are_built_for_the_keys_account():
    assert Service.command({"client_id": "c"}, "cancel", _Principal())["account"] == "A"
    with pytest.raises(ApiError) as caught:
        Service.command({"client_id": "c", "account": "B"}, "cancel", _Principal())
    assert caught.value.status == 403
    with pytest.raises(ApiError) as caught:
        Service.command({"client_id": "c", "type": "order"}, "cancel", _Principal())
    assert caught.value.status == 400 and "$.type" in caught.value.message
    with pytest.raises(ApiError) as caught:
        Service.command({"client_id": 5}, "cancel", _Principal())
    assert caught.value.status == 400 and "$.client_id" in caught.value.message


def test_events_are_filtered_to_the_callers_account():
    owners = {1: "A", 2: "B", 3: "A"}

    class _Gateway:
        owner_of = staticmethod(owners.get)

    service = Service(_Gateway(), None, RateLimiter())
    events = [
        {"type": "accepted", "order_id": 3, "account": "A", "client_id": "a", "symbol": "X", "seq": 9},
        {"type": "trade", "symbol": "X", "buyer": "A", "seller": "B", "maker_order_id": 2, "taker_order_id": 3,
         "maker_client_id": "b", "taker_client_id": "a", "price": "1", "qty": "1", "aggressor": "buy", "seq": 9},
        {"type": "cancelled", "order_id": 2, "client_id": "b2", "reason": "oco", "remaining_qty": "1", "symbol": "X"},
        {"type": "trade", "symbol": "X", "buyer": "B", "seller": "C", "maker_order_id": 2, "taker_order_id": 7,
         "maker_client_id": "b", "taker_client_id": "c", "price": "1", "qty": "1", "aggressor": "sell", "seq": 9},
        {"type": "phase", "symbol": "X", "phase": "call", "seq": 9},
    ]
    seen = service.visible(events, "A")
    assert [e["type"] for e in seen] == ["accepted", "trade", "phase"]
    trade = seen[1]
    assert (trade["buyer"], trade["seller"], trade["taker_client_id"], trade["maker_client_id"]) == ("A", None, "a", None)
    assert events[1]["seller"] == "B"  # the original (published) event is untouched


def test_frames_round_trip_and_refuse_bad_lengths():
    frame = frames.encode({"type": "order", "qty": "5"})
    assert frames.decode(frame[4:]) == {"type": "order", "qty": "5"}
    with pytest.raises(frames.FrameError) as caught:
        frames.payload_length((FRAME_BYTES_MAX + 1).to_bytes(4, "big"))
    assert caught.value.code == "frame_too_large"
    with pytest.raises(frames.FrameError):
        frames.payload_length(b"\x00\x00\x00\x00")
