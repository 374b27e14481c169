"""Network API benchmark: durable submit throughput and latency (not a test).

Starts ``jex serve`` as a child process on loopback (a fresh data directory,
real WAL), then drives it from this process with several concurrent clients:

* http    — N asyncio clients (httpx, keep-alive), one request in flight each
* binary  — N threads, one binary-protocol connection each, one request in flight
* binary-pipelined — N connections with a window of requests in flight each

and prints throughput (acknowledged commands per second) and latency p50/p99
(send to durable reply), next to the in-process ``Exchange.submit_many``
figure on the same kind of flow. Every command is an order (limit, a mix of
resting and crossing), each client under its own account and key.

    python benchmarks/api_bench.py [--clients 8] [--per-client 1500] [--window 32] [--backend auto]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from jex.api.client import Client
from jex.api.keys import KeyStore
from jex.api.testing import spawn_server
from jex.node.exchange import Exchange

INSTRUMENT = {"type": "instrument", "symbol": "B", "tick": "0.01", "lot": "1"}
RUN_SECONDS_MAX = 120.0  # each mode stops after this long even if unfinished


def order(account: str, n: int) -> dict:
    """Alternating sides around a mid: about a third of the orders cross."""
    side = "buy" if n % 2 else "sell"
    offset = (n * 7) % 5 - 1  # -1..3 ticks away from the mid
    price = 10_000 - offset if side == "buy" else 10_000 + offset
    return {"type": "order", "account": account, "client_id": f"{account}-{n}", "symbol": "B", "side": side,
            "kind": "limit", "qty": str(1 + n % 3), "price": f"{price // 100}.{price % 100:02d}"}


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(p * len(sorted_values)))]


def report(name: str, count: int, seconds: float, latencies_s: list[float]) -> None:
    lat = sorted(latencies_s)
    p50 = percentile(lat, 0.50) * 1000
    p99 = percentile(lat, 0.99) * 1000
    lat_text = f"p50 {p50:7.2f} ms  p99 {p99:7.2f} ms" if lat else "(batch: no per-command latency)"
    print(f"{name:<28} {count:>7} cmds  {count / seconds:>9,.0f} cmd/s  {lat_text}", flush=True)


# ------------------------------------------------------------------ modes


async def http_mode(url: str, keys: dict[str, str], per_client: int) -> tuple[int, float, list[float]]:
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=len(keys), max_keepalive_connections=len(keys))
    transport = httpx.AsyncHTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)], limits=limits)
    async with httpx.AsyncClient(base_url=url, timeout=60, transport=transport) as http:
        deadline = time.monotonic() + RUN_SECONDS_MAX

        async def client(account: str) -> int:
            headers = {"Authorization": f"Bearer {keys[account]}"}
            done = 0
            for n in range(per_client):
                if time.monotonic() > deadline:
                    break
                body = order(account, n)
                del body["type"], body["account"]
                start = time.perf_counter()
                r = await http.post("/api/v1/orders", json=body, headers=headers)
                latencies.append(time.perf_counter() - start)
                assert r.status_code == 200, r.text
                done += 1
            return done

        started = time.perf_counter()
        counts = await asyncio.gather(*(client(a) for a in keys))
        return sum(counts), time.perf_counter() - started, latencies


def binary_mode(port: int, keys: dict[str, str], per_client: int, window: int) -> tuple[int, float, list[float]]:
    latencies: list[float] = []
    counts: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(len(keys) + 1)
    deadline = time.monotonic() + RUN_SECONDS_MAX

    def client(account: str) -> None:
        with Client("127.0.0.1", port, keys[account]) as c:
            barrier.wait()
            mine: list[float] = []
            done = 0
            if window == 1:
                for n in range(per_client):
                    if time.monotonic() > deadline:
                        break
                    start = time.perf_counter()
                    c.submit(order(account, n))
                    mine.append(time.perf_counter() - start)
                    done += 1
            else:
                for reply in c.submit_many((order(account, n) for n in range(per_client)), window=window):
                    assert reply.error is None, reply.error
                    done += 1
        with lock:
            latencies.extend(mine)
            counts.append(done)

    threads = [threading.Thread(target=client, args=(a,)) for a in keys]
    for t in threads:
        t.start()
    barrier.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    return sum(counts), time.perf_counter() - started, latencies


def in_process(data_dir: Path, count: int, backend: str) -> tuple[int, float]:
    flow = [INSTRUMENT] + [order(f"p{n % 8}", n) for n in range(count)]
    with Exchange.open(data_dir, backend=backend) as node:
        started = time.perf_counter()
        for _ in node.submit_many(flow):
            pass
        return count, time.perf_counter() - started


# ------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients per mode")
    parser.add_argument("--per-client", type=int, default=1500, help="orders each client submits per mode")
    parser.add_argument("--window", type=int, default=32, help="requests in flight per pipelined binary connection")
    parser.add_argument("--backend", default="auto", help="WAL writer: auto, uring or pwrite")
    parser.add_argument("--server-arg", dest="server_args", action="append", default=[],
                        help="extra argument for `jex serve` (repeatable)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="jex-api-bench-") as tmp:
        root = Path(tmp)
        total = args.clients * args.per_client
        count, seconds = in_process(root / "inproc", total, args.backend)
        print(f"clients {args.clients}, orders per client {args.per_client}, WAL backend {args.backend}, "
              f"cpus {os.cpu_count()}", flush=True)
        report("in-process submit_many", count, seconds, [])

        data = root / "served"
        store = KeyStore(data)
        admin = store.add("ops", admin=True)[1]
        modes = ("http", "binary", "binary-pipelined")
        keys = {m: {f"{m[:3]}{i}": store.add(f"{m[:3]}{i}")[1] for i in range(args.clients)} for m in modes}
        child, port, binary_port = spawn_server(data, "--binary-port", "0", "--backend", args.backend,
                                                "--rate", "1000000", "--burst", "1000000", *args.server_args)
        try:
            httpx.post(f"http://127.0.0.1:{port}/api/v1/instruments", json=INSTRUMENT, headers={"X-API-Key": admin},
                       timeout=30).raise_for_status()
            count, seconds, lat = asyncio.run(http_mode(f"http://127.0.0.1:{port}", keys["http"], args.per_client))
            report(f"http ({args.clients} clients)", count, seconds, lat)
            count, seconds, lat = binary_mode(binary_port, keys["binary"], args.per_client, 1)
            report(f"binary ({args.clients} clients)", count, seconds, lat)
            count, seconds, lat = binary_mode(binary_port, keys["binary-pipelined"], args.per_client, args.window)
            report(f"binary pipelined (w={args.window})", count, seconds, lat)
        finally:
            child.send_signal(signal.SIGTERM)
            code = child.wait(60)
        if code != 0:
            print(f"api_bench: server exited {code}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
