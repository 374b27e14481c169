"""Crash and failure behaviour of the server: kill -9 loses nothing
acknowledged; a journal failure answers 503 and exits non-zero."""

from __future__ import annotations

import signal
import threading
import time

import httpx
import pytest

from jex.api.client import Client, ClientError
from jex.api.keys import KeyStore
from jex.api.testing import ApiServer, FailingStorage, spawn_server

pytestmark = pytest.mark.timeout(120)

INSTRUMENT = {"symbol": "X", "tick": "0.01", "lot": "1"}
ACKS_BEFORE_KILL = 120  # acknowledgements collected (over all clients) before the SIGKILL


def order(cid, side, price, qty="1"):
    return {"client_id": cid, "symbol": "X", "side": side, "kind": "limit", "qty": qty, "price": price}


def _http_worker(url: str, key: str, account: str, acked: list, stop: threading.Event) -> None:
    with httpx.Client(base_url=url, timeout=10) as http:
        i = 0
        while not stop.is_set():
            cid = f"{account}-{i}"
            side = "buy" if i % 2 else "sell"
            try:
                r = http.post("/api/v1/orders", json=order(cid, side, f"{100 + i % 3}.00"),
                              headers={"Authorization": f"Bearer {key}"})
            except httpx.HTTPError:
                return  # the server died: this request's outcome is unknown
            if r.status_code == 200:
                acked.append((account, cid))
            i += 1


def _binary_worker(port: int, key: str, account: str, acked: list, stop: threading.Event) -> None:
    try:
        with Client("127.0.0.1", port, key, timeout_s=10) as client:
            i = 0
            while not stop.is_set():
                cid = f"{account}-{i}"
                client.submit({"type": "order", **order(cid, "buy" if i % 2 else "sell", "101.00")})
                acked.append((account, cid))
                i += 1
    except (ClientError, OSError):
        return


def test_sigkill_loses_no_acknowledged_order(tmp_path):
    store = KeyStore(tmp_path)
    keys = {name: store.add(name, admin=name == "ops")[1] for name in ("ops", "A", "B", "C", "D")}
    child, port, binary_port = spawn_server(tmp_path, "--binary-port", "0", "--backend", "pwrite")
    acked: list[tuple[str, str]] = []
    stop = threading.Event()
    try:
        r = httpx.post(f"http://127.0.0.1:{port}/api/v1/instruments", json=INSTRUMENT,
                       headers={"X-API-Key": keys["ops"]}, timeout=10)
        assert r.status_code == 200
        workers = [threading.Thread(target=_http_worker, args=(f"http://127.0.0.1:{port}", keys[a], a, acked, stop))
                   for a in ("A", "B", "C")]
        workers.append(threading.Thread(target=_binary_worker, args=(binary_port, keys["D"], "D", acked, stop)))
        for w in workers:
            w.start()
        deadline = time.monotonic() + 60
        while len(acked) < ACKS_BEFORE_KILL and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.005)
        child.send_signal(signal.SIGKILL)  # mid-stream: requests are in flight
        child.wait(10)
        stop.set()
        for w in workers:
            w.join(20)
    finally:
        stop.set()
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL
    assert len(acked) >= ACKS_BEFORE_KILL
    survivors = list(acked)

    child, port, binary_port = spawn_server(tmp_path, "--binary-port", "0", "--backend", "pwrite")
    try:
        for account in ("A", "B", "C", "D"):
            mine = [cid for a, cid in survivors if a == account]
            with Client("127.0.0.1", binary_port, keys[account]) as client:
                replies = list(client.submit_many(
                    ({"type": "order", **order(cid, "buy", "1.00")} for cid in mine), window=64))
            for cid, reply in zip(mine, replies):
                assert reply.error is None, reply.error
                first = reply.events[0]
                assert first["type"] == "rejected" and first["reason"] == "duplicate_client_id", (account, cid, first)
    finally:
        child.send_signal(signal.SIGTERM)
        assert child.wait(30) == 0


def test_journal_failure_answers_503_and_the_server_exits_1(tmp_path):
    storage = FailingStorage()
    srv = ApiServer.start(tmp_path, storage=storage)
    with httpx.Client(base_url=srv.url, timeout=30) as http:
        assert http.post("/api/v1/instruments", json=INSTRUMENT, headers=srv.headers("ops")).status_code == 200
        storage.fail_syncs()
        r = http.post("/api/v1/orders", json=order("doomed", "buy", "1.00"), headers=srv.headers("A"))
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "unavailable" and "not acknowledged" in r.json()["error"]["message"]
    srv.thread.join(30)
    assert not srv.thread.is_alive() and srv.exit_code == [1]
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{srv.url}/health", timeout=2)
