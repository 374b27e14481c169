"""The binary protocol (length-prefixed msgpack over TCP) against a real server."""

from __future__ import annotations

import socket
import struct

import msgspec
import pytest

from jex.api import frames
from jex.api.client import Client, ClientError
from jex.api.limits import FRAME_BYTES_MAX
from jex.api.testing import ApiServer

pytestmark = pytest.mark.timeout(120)


def order(cid, side="buy", price="100.00", qty="5", **extra):
    return {"type": "order", "client_id": cid, "symbol": "X", "side": side, "kind": "limit", "qty": qty,
            "price": price, **extra}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ApiServer.start(tmp_path_factory.mktemp("bin"))
    with Client("127.0.0.1", srv.running.binary_port, srv.keys["ops"]) as admin:
        admin.submit({"type": "instrument", "symbol": "X", "tick": "0.01", "lot": "1"})
    yield srv
    assert srv.stop() == 0


def client(server, account="A") -> Client:
    return Client("127.0.0.1", server.running.binary_port, server.keys[account])


def test_round_trip_is_durable_and_matches_http_contract(server):
    with client(server, "B") as b, client(server, "A") as a:
        assert a.account == "A" and not a.admin
        (accepted,) = b.submit(order("bin-s", side="sell", qty="2"))
        assert accepted["type"] == "accepted" and accepted["account"] == "B"
        seq, events = a.submit_result(order("bin-b", qty="2"))
        assert seq == server.last_seq()
        trade = next(e for e in events if e["type"] == "trade")
        assert trade["qty"] == "2" and trade["price"] == "100.00" and trade["seller"] is None
        # Resubmitting is a logged duplicate, not an error.
        (dup,) = a.submit(order("bin-b", qty="2"))
        assert dup["reason"] == "duplicate_client_id"


def test_pipelined_submits_reply_in_order(server):
    with client(server) as a:
        commands = [order(f"pipe-{i}", price="1.00", qty="1") for i in range(200)]
        commands[50]["price"] = "1.001"  # one malformed in the middle
        replies = list(a.submit_many(commands, window=32))
    assert [r.index for r in replies] == list(range(200))
    assert replies[50].error is not None and replies[50].error.code == "bad_request"
    assert "$.price" in replies[50].error.message
    assert all(r.events[0]["client_id"] == f"pipe-{r.index}" for r in replies if r.index != 50)
    seqs = [r.seq for r in replies if r.seq is not None]
    assert seqs == sorted(seqs) and len(set(seqs)) == 199


def test_auth_is_required_and_checked(server):
    with pytest.raises(ClientError) as caught:
        Client("127.0.0.1", server.running.binary_port, "jex_000000000000_wrong")
    assert caught.value.code == "unauthorized"
    with socket.create_connection(("127.0.0.1", server.running.binary_port), timeout=10) as raw:
        raw.sendall(frames.encode(order("noauth")))
        reply = _read(raw)
        assert reply["type"] == "error" and reply["code"] == "unauthorized"


def test_isolation_and_admin_rules(server):
    with client(server) as a:
        with pytest.raises(ClientError) as caught:
            a.submit({**order("iso-1"), "account": "B"})
        assert caught.value.code == "forbidden"
        with pytest.raises(ClientError) as caught:
            a.submit({"type": "instrument", "symbol": "Z", "tick": "1", "lot": "1"})
        assert caught.value.code == "forbidden"
        with pytest.raises(ClientError) as caught:
            a.submit({"type": "clock"})
        assert caught.value.code == "bad_request"
        assert a.submit(order("iso-2"))[0]["account"] == "A"


def test_malformed_frames_get_error_frames_and_the_connection_stays(server):
    with client(server) as a:
        before = server.last_seq()
        for payload, needle in (
            (b"\xc1", "malformed msgpack"),  # 0xc1 is never used in msgpack
            (msgspec.msgpack.encode([1, 2]), "expected a map"),
            (msgspec.msgpack.encode({"no": "type"}), "$.type"),
            (msgspec.msgpack.encode({**order("mf"), "qty": 1.5}), "$.qty"),
            (msgspec.msgpack.encode({**order("mf"), "bogus": 1}), "bogus"),
        ):
            reply = a.send_raw(struct.pack(">I", len(payload)) + payload)
            assert reply["type"] == "error" and needle in reply["message"], reply
        assert server.last_seq() == before
        assert a.submit(order("mf-ok"))[0]["type"] == "accepted"


def test_oversized_frame_is_refused_and_closes(server):
    with client(server) as a:
        reply = a.send_raw(struct.pack(">I", FRAME_BYTES_MAX + 1))
        assert reply["code"] == "frame_too_large"
        with pytest.raises((ClientError, OSError)):
            a.submit(order("after-big"))


def test_request_ids_are_echoed(server):
    with socket.create_connection(("127.0.0.1", server.running.binary_port), timeout=10) as raw:
        raw.sendall(frames.encode({"type": "auth", "key": server.keys["A"]}))
        assert _read(raw)["type"] == "auth_ok"
        raw.sendall(frames.encode({**order("rid-1"), "id": 7}) + frames.encode({**order("rid-2", price="x"), "id": "q"}))
        first, second = _read(raw), _read(raw)
        assert first["type"] == "result" and first["id"] == 7
        assert second["type"] == "error" and second["id"] == "q"


def _read(sock: socket.socket) -> dict:
    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            assert chunk, "connection closed"
            data += chunk
        return data

    return frames.decode(exactly(frames.payload_length(exactly(4))))
