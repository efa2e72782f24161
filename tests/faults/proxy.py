"""A loopback TCP proxy that breaks connections on purpose: how the fault matrix reaches the
hospital database, S3 and the platform without touching the shared services behind them.

    proxy = FaultProxy(("127.0.0.1", 55432), name="hospital-db")   # listens on 127.0.0.1:<free port>
    url = url_of_the_database.set(port=proxy.port)                # what the client connects to
    proxy.cut()            # every open connection is reset (RST), as a network failure does
    proxy.refuse()         # nothing listens any more: new connections are refused (ECONNREFUSED)
    proxy.down()           # both
    proxy.restore()        # listening again on the same port, traffic passes
    proxy.reset_answers(3) # the next 3 answers are replaced by a reset: the upstream handled the
                           # request, the client never sees the answer

One thread per proxied connection moves bytes both ways with ``select`` (a 50 ms tick to notice a
cut); a cut connection is closed with SO_LINGER 0, so both peers get an RST, not a polite FIN.
``stats`` counts what the proxy did, so a test can prove its fault really happened.
"""

from __future__ import annotations

import select
import socket
import struct
import threading
from collections import Counter

__all__ = ["FaultProxy"]

_TICK_S = 0.05
_LINGER_RST = struct.pack("ii", 1, 0)


def _rst_close(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


class _Pair:
    """One client connection and its upstream connection."""

    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client = client
        self.upstream = upstream
        self.kill = threading.Event()  # set by cut(): reset both sides
        self.closed = threading.Event()
        self.awaiting_answer = False  # client bytes went up, no answer bytes came back yet


class FaultProxy:
    """See the module docstring. Thread-safe; ``close()`` when done."""

    def __init__(self, upstream: tuple[str, int], *, name: str = "proxy") -> None:
        self.upstream = upstream
        self.name = name
        self.stats: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._pairs: set[_Pair] = set()
        self._reset_budget = 0
        self._listener: socket.socket | None = None
        self._accepting: threading.Thread | None = None
        self._stop_accepting = threading.Event()
        self.port = 0
        self._listen(0)

    def __repr__(self) -> str:
        state = "listening" if self.listening else "refusing"
        return f"FaultProxy({self.name}: 127.0.0.1:{self.port} -> {self.upstream[0]}:{self.upstream[1]}, {state})"

    # -- control ------------------------------------------------------------------------------

    @property
    def listening(self) -> bool:
        return self._listener is not None

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._pairs)

    def cut(self) -> int:
        """Reset every open connection (both sides); returns how many were cut."""
        with self._lock:
            pairs = list(self._pairs)
        for p in pairs:
            p.kill.set()
        for p in pairs:
            if not p.closed.wait(1.0):  # its thread is stuck in a send: wake it the hard way
                for s in (p.client, p.upstream):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                p.closed.wait(1.0)
        self._count("cut", len(pairs))
        return len(pairs)

    def refuse(self) -> None:
        """Stop listening: connecting to the port is refused until :meth:`restore`."""
        if self._listener is None:
            return
        self._stop_accepting.set()
        if self._accepting is not None:
            self._accepting.join(5)
        self._listener = None
        self._count("refusing", 1)

    def down(self) -> int:
        """Refuse new connections and reset the open ones."""
        self.refuse()
        return self.cut()

    def restore(self) -> None:
        """Listen again (same port) and pass traffic; no answer resets pending."""
        with self._lock:
            self._reset_budget = 0
        if self._listener is None:
            self._listen(self.port)

    def reset_answers(self, n: int) -> None:
        """Reset the connection instead of passing the next ``n`` answers (upstream bytes that
        follow a client request): the upstream has handled the request, the client gets an RST."""
        with self._lock:
            self._reset_budget = n

    def close(self) -> None:
        self.refuse()
        self.cut()

    # -- plumbing -----------------------------------------------------------------------------

    def _listen(self, port: int) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(128)
        self.port = sock.getsockname()[1]
        self._listener = sock
        self._stop_accepting = threading.Event()
        self._accepting = threading.Thread(
            target=self._accept_loop,
            args=(sock, self._stop_accepting),
            name=f"{self.name}-accept",
            daemon=True,
        )
        self._accepting.start()

    def _accept_loop(self, listener: socket.socket, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                ready, _, _ = select.select([listener], [], [], _TICK_S)
                if not ready:
                    continue
                try:
                    client, _ = listener.accept()
                except OSError:
                    continue
                self._count("accepted", 1)
                try:
                    upstream = socket.create_connection(self.upstream, timeout=5)
                except OSError:
                    self._count("upstream_unreachable", 1)
                    _rst_close(client)
                    continue
                upstream.settimeout(None)
                for s in (client, upstream):
                    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                pair = _Pair(client, upstream)
                with self._lock:
                    self._pairs.add(pair)
                threading.Thread(
                    target=self._pump, args=(pair,), name=f"{self.name}-pump", daemon=True
                ).start()
        finally:
            listener.close()

    def _count(self, what: str, n: int = 1) -> None:
        with self._lock:
            self.stats[what] += n

    def _take_reset(self) -> bool:
        with self._lock:
            if self._reset_budget > 0:
                self._reset_budget -= 1
                return True
            return False

    def _pump(self, p: _Pair) -> None:
        graceful = False
        try:
            while not p.kill.is_set():
                ready, _, _ = select.select([p.client, p.upstream], [], [], _TICK_S)
                for src in ready:
                    data = src.recv(65536)
                    if not data:  # one side closed: close the other one too (politely)
                        graceful = True
                        return
                    if src is p.client:
                        p.awaiting_answer = True
                        p.upstream.sendall(data)
                        self._count("bytes_up", len(data))
                        continue
                    if p.awaiting_answer and self._take_reset():
                        self._count("answers_reset", 1)
                        p.kill.set()
                        break
                    p.awaiting_answer = False
                    p.client.sendall(data)
                    self._count("bytes_down", len(data))
        except OSError:
            pass
        finally:
            with self._lock:
                self._pairs.discard(p)
            for s in (p.client, p.upstream):
                if graceful:
                    try:
                        s.close()
                    except OSError:
                        pass
                else:
                    _rst_close(s)
            p.closed.set()
