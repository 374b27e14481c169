"""Running the API: gateway + HTTP/WebSocket (uvicorn) + binary protocol (api room).

``serve(config)`` opens the node behind a ``Gateway``, binds the sockets,
runs until SIGINT/SIGTERM (or ``Running.stop()``) and returns an exit code:
0 after a clean shutdown, 1 when the node stopped on a failure (a journal
write or sync error): the pending requests got 503, nothing more was
acknowledged, and a restart recovers from the log.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import uvicorn

from jex.api.app import create_app
from jex.api.binary import BinaryServer
from jex.api.keys import KeyRing, KeyStore
from jex.api.limits import RATE_BURST_DEFAULT, RATE_PER_S_DEFAULT, WS_MESSAGE_BYTES_MAX, RateLimiter
from jex.api.service import Service
from jex.node.gateway import DRAIN_REQUESTS_MAX, Gateway

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
LISTEN_BACKLOG = 1024  # pending TCP connections per listening socket
SHUTDOWN_GRACE_S = 5  # uvicorn waits this long for open requests on shutdown
WS_PING_INTERVAL_S = 20.0  # keep-alive pings on idle WebSocket connections

EXIT_OK = 0
EXIT_NODE_FAILED = 1


@dataclass
class ServeConfig:
    data_dir: Path
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT  # 0 picks a free port (printed, and given to ``ready``)
    binary_port: int | None = None  # None: no binary protocol; 0 picks a free port
    backend: str = "auto"
    rate_per_s: float = RATE_PER_S_DEFAULT
    rate_burst: float = RATE_BURST_DEFAULT
    drain_requests_max: int = DRAIN_REQUESTS_MAX
    storage: object | None = None  # a journal Storage (tests inject faults)
    switch_interval_s: float | None = None  # GIL switch interval; None keeps Python's (5 ms)
    quiet: bool = False


@dataclass
class Running:
    """Handed to ``ready`` once the sockets listen."""

    http_port: int
    binary_port: int | None
    gateway: Gateway
    service: Service
    _loop: asyncio.AbstractEventLoop
    _server: uvicorn.Server

    def stop(self) -> None:
        """Ask the server to shut down (thread-safe)."""
        self._loop.call_soon_threadsafe(setattr, self._server, "should_exit", True)


def serve(config: ServeConfig, ready: Callable[[Running], None] | None = None) -> int:
    """Run the API until a signal, ``Running.stop()`` or a node failure."""
    keys = KeyRing(KeyStore(config.data_dir))
    if config.switch_interval_s is not None:
        sys.setswitchinterval(config.switch_interval_s)
    http_sock = _listen(config.host, config.port)
    binary_sock = _listen(config.host, config.binary_port) if config.binary_port is not None else None
    options = {} if config.storage is None else {"storage": config.storage}
    try:
        gateway = Gateway.open(config.data_dir, backend=config.backend,
                               drain_requests_max=config.drain_requests_max, **options)
    except BaseException:
        http_sock.close()
        if binary_sock is not None:
            binary_sock.close()
        raise
    try:
        service = Service(gateway, keys, RateLimiter(config.rate_per_s, config.rate_burst))
        app = create_app(service)
        uv_config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="on",
            ws_max_size=WS_MESSAGE_BYTES_MAX,
            ws_ping_interval=WS_PING_INTERVAL_S,
            timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
            backlog=LISTEN_BACKLOG,
        )
        server = _Server(uv_config)
        asyncio.run(_main(config, server, gateway, service, keys, http_sock, binary_sock, ready))
    finally:
        gateway.stop()
        http_sock.close()
        if binary_sock is not None:
            binary_sock.close()
    if gateway.failure is not None:
        print(f"jex serve: node stopped: {type(gateway.failure).__name__}: {gateway.failure} "
              "(nothing more was acknowledged; restart recovers from the log)", file=sys.stderr, flush=True)
        return EXIT_NODE_FAILED
    return EXIT_OK


async def _main(config: ServeConfig, server: uvicorn.Server, gateway: Gateway, service: Service, keys: KeyRing,
                http_sock: socket.socket, binary_sock: socket.socket | None,
                ready: Callable[[Running], None] | None) -> None:
    loop = asyncio.get_running_loop()
    # A node failure (from the writer thread) shuts the server down.
    def on_node_stop(failure: BaseException | None) -> None:
        if not loop.is_closed():
            loop.call_soon_threadsafe(setattr, server, "should_exit", True)

    gateway.on_stop(on_node_stop)
    binary = None
    if binary_sock is not None:
        binary = BinaryServer(service)
        await binary.start(config.host, 0, sock=binary_sock)
    http_port = http_sock.getsockname()[1]
    binary_port = binary_sock.getsockname()[1] if binary_sock is not None else None
    serving = asyncio.create_task(server.serve(sockets=[http_sock]))
    while not server.started and not serving.done():
        await asyncio.sleep(0.01)
    if server.started:
        if not config.quiet:
            extra = f", binary {config.host}:{binary_port}" if binary_port is not None else ""
            print(f"jex serve: http://{config.host}:{http_port}{extra} (data dir {config.data_dir}, "
                  f"{keys.count} active keys, WAL {gateway.exchange.backend})", file=sys.stderr, flush=True)
            if keys.count == 0:
                print("jex serve: no API keys yet: every write will get 401; make one with "
                      "`jex keys add ACCOUNT [--admin]`", file=sys.stderr, flush=True)
        if ready is not None:
            ready(Running(http_port, binary_port, gateway, service, loop, server))
    try:
        await serving
    finally:
        if binary is not None:
            await binary.close()


class _Server(uvicorn.Server):
    """uvicorn, except that SIGINT/SIGTERM end in a clean exit: uvicorn would
    re-raise the signal after its shutdown, killing the process before the
    gateway has closed the node."""

    def handle_exit(self, sig: int, frame) -> None:
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        self.should_exit = True


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY on accepted
    # sockets only when the proto says TCP, and without it every response
    # written in two parts waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, exc.strerror, f"{host}:{port}") from None
    except BaseException:
        sock.close()
        raise
    sock.set_inheritable(False)
    return sock


def serve_in_thread(config: ServeConfig, timeout_s: float = 30.0) -> tuple[Running, threading.Thread, list[int]]:
    """Start ``serve`` in a background thread (tests, embedding); returns the
    running handle, the thread and a one-element list that receives the exit
    code when the thread ends."""
    started = threading.Event()
    handle: list[Running] = []
    code: list[int] = []
    errors: list[BaseException] = []

    def on_ready(running: Running) -> None:
        handle.append(running)
        started.set()

    def run() -> None:
        try:
            code.append(serve(config, on_ready))
        except BaseException as exc:
            errors.append(exc)
        finally:
            started.set()

    thread = threading.Thread(target=run, name="jex-serve", daemon=True)
    thread.start()
    if not started.wait(timeout_s):
        raise TimeoutError(f"server did not start within {timeout_s} s")
    if errors:
        raise errors[0]
    if not handle:
        raise RuntimeError(f"server stopped before it was ready (exit code {code})")
    return handle[0], thread, code
