"""A fault-injecting HTTP proxy on 127.0.0.1 in front of an S3 endpoint (the moto server).

Used by the fault tests to make the object store misbehave *for real*, on the wire, the way S3
does under load or misconfiguration — the pipeline talks to it through ``store.endpoint_url``
exactly as to a real endpoint, so every layer (botocore, s3fs, zarr, our store code) is exercised.

Transient faults on a seeded random ``fraction`` of the reads and ``write_fraction`` of the writes
(random gaps of at most 2/fraction requests between faults: n requests get at least n·fraction/2),
the kinds taking turns on each, so that every kind strikes both (see :class:`FaultPlan`):

* ``500``        — 500 ``InternalError`` (S3 XML error body), request not forwarded;
* ``503``        — 503 ``SlowDown`` ("Please reduce your request rate."), not forwarded;
* ``drop``       — the connection is closed without a response, request not forwarded;
* ``drop_after`` — the request **is** forwarded (the backend applies it), then the connection is
  closed without a response: the client cannot know the write happened (retries must be idempotent);
* ``delay``      — the response is delayed by up to ``max_delay_s`` (bounded), then relayed.

Body faults (:data:`BODY_KINDS`, only on successful GET responses with a body: 200/206; other
requests they would strike pass untouched and do not count), also in turn with the others when listed in ``kinds``:

* ``truncate``   — the response is forwarded with its full ``Content-Length`` but only a seeded part
  of the body (at most all but one byte) is sent, then the connection is closed: a short read;
* ``corrupt``    — the full response, with one seeded bit of the body flipped (same length): data
  damaged on the way, as a faulty NIC, proxy or disk would.

A request (method, path, query, range) is never failed more than ``max_consecutive`` times in a
row, so a client that retries at least that often always gets through: the run's success does not
depend on luck or on the order of concurrent requests, while the faults are still frequent.

Permanent modes (every request, no forwarding): ``no_such_bucket`` (404 NoSuchBucket) and
``access_denied`` (403 AccessDenied). ``permanent_after`` switches to the permanent mode after that
many further requests (a fault in the middle of a stage); with ``trigger_methods`` only requests of
those methods are counted, e.g. ``("PUT", "POST", "DELETE")`` to strike in the middle of a write.

Targeting (both modes): ``paths`` (substrings of the request path), ``methods`` and ``ranged``
(GETs of a byte range only, or requests without a ``Range`` header only) restrict the faults to
matching requests (the others pass untouched and do not count), and ``max_faults`` stops after that
many, ``skip_first`` lets that many targeted requests through first — e.g. exactly one
dropped response of a lock renewal (the first PUT of the lock is its creation):
``FaultPlan(fraction=1, kinds=("drop_after",), paths=("_locks/run.lock",), methods=("PUT",),
skip_first=1, max_faults=1)``. Proxies chain (``FaultProxy(other.url)``), one plan each.

``FaultProxy(..., record=True)`` keeps every request as (start, end, method, path, status, fault)
with wall-clock times (:meth:`requests`): which writes of a run landed, and when.

>>> proxy = FaultProxy("http://127.0.0.1:5000").start()
>>> proxy.configure(FaultPlan(fraction=0.2, seed=3))   # then point endpoint_url at proxy.url
>>> proxy.stats()                                       # {'requests': ..., 'faults': {'500': ...}}
>>> proxy.stop()
"""

from __future__ import annotations

import dataclasses
import http.client
import random
import socket
import threading
import time
import urllib.parse
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TRANSIENT_KINDS = ("500", "503", "drop", "drop_after", "delay")
BODY_KINDS = ("truncate", "corrupt")
WRITE_METHODS = ("PUT", "POST", "DELETE")
PERMANENT_KINDS = ("no_such_bucket", "access_denied")

_ERRORS = {
    "500": (500, "InternalError", "We encountered an internal error. Please try again."),
    "503": (503, "SlowDown", "Please reduce your request rate."),
    "no_such_bucket": (404, "NoSuchBucket", "The specified bucket does not exist"),
    "access_denied": (403, "AccessDenied", "Access Denied"),
}
# hop-by-hop headers are not relayed
_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}


@dataclasses.dataclass(frozen=True)
class FaultPlan:
    """What the proxy does. ``fraction`` of requests get a transient fault of one of ``kinds``."""

    fraction: float = 0.0
    write_fraction: float | None = None   # for PUT/POST/DELETE (None: ``fraction``)
    kinds: tuple[str, ...] = TRANSIENT_KINDS
    seed: int = 0
    max_delay_s: float = 0.5
    max_consecutive: int = 2
    permanent: str | None = None      # one of PERMANENT_KINDS: every request fails that way
    permanent_after: int = 0          # ... after this many more (trigger) requests (0: at once)
    trigger_methods: tuple[str, ...] | None = None  # which requests count for permanent_after; None: all
    paths: tuple[str, ...] | None = None     # only requests whose path contains one of these (None: all)
    methods: tuple[str, ...] | None = None   # only requests of these methods (None: all)
    max_faults: int | None = None            # at most this many faults (None: no limit)
    skip_first: int = 0                      # targeted requests let through before any fault
    ranged: bool | None = None               # only GETs with (True) / requests without (False) a Range header

    def __post_init__(self):
        if not 0.0 <= self.fraction <= 1.0 or not 0.0 <= (self.write_fraction or 0.0) <= 1.0:
            raise ValueError("fractions must be in [0, 1]")
        bad = [k for k in self.kinds if k not in TRANSIENT_KINDS + BODY_KINDS]
        if bad or (self.permanent is not None and self.permanent not in PERMANENT_KINDS):
            raise ValueError(f"unknown fault kind(s) {bad or self.permanent}")
        if not 0.0 <= self.max_delay_s <= 5.0:
            raise ValueError("max_delay_s must be in [0, 5] (faults stay bounded in time)")


def s3_error_body(code: str, message: str, resource: str = "") -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
            f"<Resource>{resource}</Resource><RequestId>faultproxy</RequestId></Error>").encode()


class FaultProxy:
    """Threaded HTTP/1.1 proxy on loopback; ``url`` is its endpoint. Thread-safe reconfiguration."""

    def __init__(self, backend_url: str, plan: FaultPlan | None = None, host: str = "127.0.0.1",
                 record: bool = False):
        u = urllib.parse.urlsplit(backend_url)
        self.backend = (u.hostname, u.port or 80)
        self._lock = threading.Lock()
        self._plan = plan or FaultPlan()
        self._rng = random.Random(self._plan.seed)
        self._streak: Counter = Counter()
        self._counts: Counter = Counter()
        self._gets: Counter = Counter()   # GETs of whole objects / of byte ranges
        self._log: list[tuple[str, str, str]] = []   # (kind, method, path) of every fault
        self._until_permanent = self._plan.permanent_after
        self._n_faulted = [0, 0]   # faults so far on reads, on writes
        self._until_fault = [None, None]   # requests until the next fault, on reads, on writes
        self._n_plan_faults = 0             # faults of the current plan (for max_faults)
        self._n_targeted = 0                # targeted requests of the current plan (for skip_first)
        self._record = record
        self._requests: list[tuple[float, float, str, str, int, str | None]] = []
        self._server = ThreadingHTTPServer((host, 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # -- control ---------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FaultProxy:
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="faultproxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def configure(self, plan: FaultPlan) -> None:
        """Switch to ``plan`` (new RNG from its seed; counters kept, see :meth:`reset_stats`)."""
        with self._lock:
            self._plan = plan
            self._rng = random.Random(plan.seed)
            self._streak.clear()
            self._until_permanent = plan.permanent_after
            self._n_faulted = [0, 0]
            self._until_fault = [None, None]
            self._n_plan_faults = 0
            self._n_targeted = 0

    def reset_stats(self) -> None:
        with self._lock:
            self._counts.clear()
            self._gets.clear()
            self._log.clear()
            self._requests.clear()

    def requests(self, since: int = 0) -> list[tuple[float, float, str, str, int, str | None]]:
        """(start, end, method, path, status, fault kind) of every request (``record=True``) in the
        order they ended, from the ``since``-th on; status 0: no response was sent."""
        with self._lock:
            return self._requests[since:]

    def _note(self, t0: float, method: str, path: str, status: int, kind: str | None) -> None:
        if self._record:
            with self._lock:
                self._requests.append((t0, time.time(), method, path, status, kind))

    def stats(self) -> dict:
        with self._lock:
            faults = {k: v for k, v in self._counts.items() if k != "requests"}
            return {"requests": self._counts["requests"], "faults": faults, "log": list(self._log),
                    "gets": dict(self._gets)}

    # -- decision --------------------------------------------------------------------------------
    def _decide(self, method: str, path: str, range_header: str | None) -> tuple[str | None, float]:
        """(fault kind or None, delay seconds) for one request."""
        with self._lock:
            plan = self._plan
            self._counts["requests"] += 1
            if method == "GET":
                self._gets["ranged" if range_header else "whole"] += 1
            if (plan.paths is not None and not any(p in path for p in plan.paths)) or \
                    (plan.ranged is not None and (range_header is not None) != plan.ranged) or \
                    (plan.methods is not None and method not in plan.methods) or \
                    (plan.max_faults is not None and self._n_plan_faults >= plan.max_faults):
                return None, 0.0  # not targeted: passes untouched
            self._n_targeted += 1
            if self._n_targeted <= plan.skip_first:
                return None, 0.0
            if plan.permanent is not None:
                if self._until_permanent <= 0:
                    self._n_plan_faults += 1
                    self._counts[plan.permanent] += 1
                    self._log.append((plan.permanent, method, path))
                    return plan.permanent, 0.0
                if plan.trigger_methods is None or method in plan.trigger_methods:
                    self._until_permanent -= 1  # at 0 this request is the last one to get through
            key = (method, path, range_header)
            kind, delay = None, 0.0
            write = method in WRITE_METHODS
            fraction = plan.write_fraction if (write and plan.write_fraction is not None) else plan.fraction
            if fraction > 0 and plan.kinds and self._fault_now(write, fraction):
                kind = plan.kinds[self._n_faulted[write] % len(plan.kinds)]  # kinds in turn: each one occurs
                self._n_faulted[write] += 1
                if kind in BODY_KINDS and method != "GET":
                    kind = None     # no body to damage: passes untouched
                elif kind == "delay":
                    delay = self._rng.uniform(0.0, plan.max_delay_s)
                elif self._streak[key] >= plan.max_consecutive:
                    kind = None     # this request already failed max_consecutive times in a row
            if kind is None or kind == "delay":
                self._streak.pop(key, None)
            else:
                self._streak[key] += 1
            if kind is not None:
                self._n_plan_faults += 1
                self._counts[kind] += 1
                self._log.append((kind, method, path))
            return kind, delay

    def _uncount(self, kind: str, method: str, path: str) -> None:
        """A body fault decided for a response that turned out to have no body: not a fault."""
        with self._lock:
            self._counts[kind] -= 1
            self._n_plan_faults -= 1
            if (kind, method, path) in self._log:
                self._log.remove((kind, method, path))

    def _damage(self, kind: str, data: bytes) -> bytes:
        """The part of ``data`` a ``truncate`` sends, or ``data`` with one bit flipped (``corrupt``)."""
        with self._lock:
            if kind == "truncate":
                return data[: self._rng.randrange(len(data))]
            i = self._rng.randrange(len(data) * 8)
        out = bytearray(data)
        out[i // 8] ^= 1 << (i % 8)
        return bytes(out)

    def _fault_now(self, write: bool, fraction: float) -> bool:
        """Seeded random gaps between faults: 1..(2/fraction - 1) requests, 1/fraction on average, so
        n requests get about n·fraction faults and never fewer than n·fraction/2 (lock held)."""
        if self._until_fault[write] is None:
            self._until_fault[write] = self._rng.randint(1, max(1, round(2 / fraction) - 1))
        self._until_fault[write] -= 1
        if self._until_fault[write] > 0:
            return False
        self._until_fault[write] = None
        return True

    # -- the handler -----------------------------------------------------------------------------
    def _handler_class(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _read_body(self) -> bytes:
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    parts = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            break
                        parts.append(self.rfile.read(size))
                        self.rfile.readline()
                    return b"".join(parts)
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

            def _drop(self) -> None:
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

            def _send_error_xml(self, kind: str) -> None:
                status, code, message = _ERRORS[kind]
                body = s3_error_body(code, message, self.path) if self.command != "HEAD" else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(s3_error_body(code, message, self.path))))
                self.send_header("x-amz-request-id", "faultproxy")
                self.end_headers()
                if body:
                    self.wfile.write(body)

            def _forward(self, body: bytes):
                conn = http.client.HTTPConnection(*proxy.backend, timeout=60)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                    if body or self.command in ("PUT", "POST"):
                        headers["Content-Length"] = str(len(body))
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    return resp.status, resp.reason, resp.getheaders(), data
                finally:
                    conn.close()

            def _handle(self) -> None:
                t0 = time.time()
                body = self._read_body()
                path = urllib.parse.urlsplit(self.path).path + "?" + urllib.parse.urlsplit(self.path).query
                kind, delay = proxy._decide(self.command, path, self.headers.get("Range"))
                if kind in ("500", "503", "no_such_bucket", "access_denied"):
                    self._send_error_xml(kind)
                    proxy._note(t0, self.command, path, _ERRORS[kind][0], kind)
                    return
                if kind == "drop":
                    self._drop()
                    proxy._note(t0, self.command, path, 0, kind)
                    return
                status, reason, headers, data = self._forward(body)
                if kind == "drop_after":
                    self._drop()
                    proxy._note(t0, self.command, path, 0, kind)
                    return
                if kind in BODY_KINDS and (not data or status not in (200, 206)):  # object bodies only
                    proxy._uncount(kind, self.command, path)
                    kind = None
                if delay:
                    time.sleep(delay)
                self.send_response(status, reason)
                for k, v in headers:
                    if k.lower() not in _HOP and k.lower() not in ("content-length", "server", "date"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)) if self.command != "HEAD" else
                                 dict((k.lower(), v) for k, v in headers).get("content-length", "0"))
                self.end_headers()
                if kind in BODY_KINDS:
                    self.wfile.write(proxy._damage(kind, data))
                    if kind == "truncate":
                        self.wfile.flush()
                        self._drop()
                elif self.command != "HEAD" and data:
                    self.wfile.write(data)
                proxy._note(t0, self.command, path, status, kind)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        return Handler
