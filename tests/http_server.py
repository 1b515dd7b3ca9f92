"""A real static-file HTTP server for tests and benchmarks that honours Range requests.

Sharded Zarr v3 is read with HTTP Range requests, including *suffix* ranges (``bytes=-N``) for the
shard index; Python's ``http.server`` ignores ``Range`` and returns the whole file (the read then
fails). This server uses aiohttp's static-file handler (``web.FileResponse``: single ranges, suffix
ranges, 206/416, ``Content-Range``), never lists directories, and records every request
(method, path, Range header, status, body bytes sent) so tests can count requests and bytes.

    with RangeHTTPServer(root) as srv:
        ds = xr.open_zarr(srv.url("master.zarr"))
        ...
        srv.requests()   # -> [RequestRecord(...), ...]

``latency_s`` adds a fixed delay per request (an emulated object store) for benchmarks.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from pathlib import Path

from aiohttp import web

_T0 = web.RequestKey("t0", float) if hasattr(web, "RequestKey") else "t0"


@dataclasses.dataclass(frozen=True)
class RequestRecord:
    method: str
    path: str
    range: str | None
    status: int
    bytes: int   # body bytes sent (Content-Length of the response; 0 for HEAD)
    t: float     # time.perf_counter() when the request arrived


class RangeHTTPServer:
    """Serve ``root`` read-only on ``127.0.0.1:<free port>`` from a background thread."""

    def __init__(self, root: str | Path, *, latency_s: float = 0.0, host: str = "127.0.0.1", port: int = 0):
        self.root = Path(root)
        self._port_wanted = int(port)
        self.latency_s = float(latency_s)
        self.host = host
        self.port: int | None = None
        self._log: list[RequestRecord] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    # -- app ---------------------------------------------------------------------------------
    def _app(self) -> web.Application:
        @web.middleware
        async def delay(request, handler):
            if self.latency_s:
                await asyncio.sleep(self.latency_s)
            return await handler(request)

        async def record(request, response):
            n = 0
            if request.method != "HEAD" and response.status < 400:
                n = int(response.headers.get("Content-Length", 0) or 0)
            rec = RequestRecord(request.method, request.path, request.headers.get("Range"), response.status, n,
                                request.get(_T0, time.perf_counter()))
            with self._lock:
                self._log.append(rec)

        @web.middleware
        async def stamp(request, handler):
            request[_T0] = time.perf_counter()
            return await handler(request)  # errors (404/416) are recorded by on_response_prepare too

        app = web.Application(middlewares=[stamp, delay])
        app.on_response_prepare.append(record)
        app.router.add_static("/", self.root, show_index=False, follow_symlinks=False, append_version=False)
        return app

    # -- lifecycle ---------------------------------------------------------------------------
    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)

        async def start():
            self._runner = web.AppRunner(self._app(), access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, self.host, self._port_wanted)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]

        try:
            loop.run_until_complete(start())
        except BaseException as exc:  # pragma: no cover - reported to the starting thread
            self._error = exc
            self._started.set()
            return
        self._started.set()
        loop.run_forever()
        loop.run_until_complete(self._runner.cleanup())
        loop.close()

    def start(self) -> RangeHTTPServer:
        self._thread = threading.Thread(target=self._serve, name="range-http-server", daemon=True)
        self._thread.start()
        self._started.wait(30)
        if self._error is not None:
            raise RuntimeError(f"HTTP server did not start: {self._error}")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> RangeHTTPServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- use ---------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def url(self, rel: str = "") -> str:
        return f"{self.base_url}/{rel.lstrip('/')}" if rel else self.base_url

    def requests(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._log)

    def reset(self) -> None:
        with self._lock:
            self._log.clear()

    def totals(self, since: int = 0) -> dict[str, int]:
        """Requests (all, GET 2xx, errors), body bytes sent and range requests since log index ``since``."""
        recs = self.requests()[since:]
        return {"requests": len(recs),
                "ok": sum(r.status < 400 for r in recs),
                "errors": sum(r.status >= 400 for r in recs),
                "range_requests": sum(r.range is not None for r in recs),
                "bytes": sum(r.bytes for r in recs)}


def main(argv=None) -> int:
    """Serve a folder (e.g. a store root) on 127.0.0.1 until interrupted: ``python tests/http_server.py DIR``."""
    import argparse

    p = argparse.ArgumentParser(description="static HTTP server with Range support (for trying sm1km stores)")
    p.add_argument("root")
    p.add_argument("--port", type=int, default=8000, help="0 = any free port")
    p.add_argument("--latency-ms", type=float, default=0.0)
    args = p.parse_args(argv)
    with RangeHTTPServer(args.root, latency_s=args.latency_ms / 1000, port=args.port) as srv:
        print(f"serving {args.root} at {srv.base_url}  (Ctrl-C to stop)", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
