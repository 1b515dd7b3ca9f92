"""Raw input files from anywhere fsspec reaches: local globs, ``s3://`` globs, URL lists, date templates.

Every ``inputs.*`` entry of the config is one of

* a local path or glob (``/data/cci/*.nc``, ``**`` allowed) — as before;
* an ``s3://bucket/prefix/*.nc`` glob, listed with s3fs using :class:`InputOptions` (the store's
  endpoint/anonymity/client kwargs unless ``inputs.storage`` gives the inputs their own;
  credentials always from the environment, ``AWS_ACCESS_KEY_ID`` …);
* a list of paths/URLs (each may itself be a glob or a template);
* a URL template with ``{date:%Y%m%d}`` (any ``strftime`` format; ``{date}`` = ISO) for HTTPS
  servers that cannot be listed: one URL per day of the period (duplicates dropped, so a monthly
  ``{date:%Y%m}`` template gives one URL per month). A URL that answers 404 is *not yet
  available* and is left out (:func:`probe`), which is what ``period.end: latest`` builds on.

Files are **read on the workers**: tasks carry URLs and an :class:`InputOptions` (picklable, no
credentials), never open files. The readers of [14] bound every input before decoding it and
need a real path for that (the truncation check of classic netCDF, netCDF-C, GDAL, eccodes,
pyhdf, zip central directories), so a remote file is copied into a bounded :class:`LocalCache`
on the worker for the duration of one read and removed afterwards (:func:`local_paths`). The
exception is netCDF-4/HDF5 CCI days: read through a file object (:func:`open_input`, h5netcdf,
range requests; limits checked on the declared dimensions first), no copy. Hashing streams
through a file object (:func:`sha256`) and never touches the disk. Anything recorded (attrs, index, logs, errors) uses :func:`basename` or
:func:`display` — query strings (pre-signed URLs) are redacted with :func:`sm1km.redact.redact_url`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import glob as _glob
import hashlib
import logging
import os
import posixpath
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sm1km.errors import InputError
from sm1km.redact import redact_url

log = logging.getLogger(__name__)

#: ``{date}`` / ``{date:%Y%m%d}`` placeholders of a URL template
TEMPLATE_RE = re.compile(r"\{date(?::(?P<fmt>[^{}]*))?\}")
#: how many URLs :func:`probe` checks at once
PROBE_THREADS = 8
#: default seconds of one HTTP request (connect + read) and of a whole copy into the cache
HTTP_TIMEOUT_S = 60.0
COPY_TIMEOUT_S = 1800.0
#: environment overrides of the local cache: its folder and its size bound (bytes)
CACHE_DIR_ENV = "SM1KM_INPUT_CACHE"
CACHE_BYTES_ENV = "SM1KM_INPUT_CACHE_BYTES"
DEFAULT_CACHE_BYTES = 8 << 30

Spec = str | Sequence[str]


@dataclasses.dataclass(frozen=True)
class InputOptions:
    """How the workers reach remote inputs (picklable; never holds credentials).

    ``storage_options``: fsspec options for ``s3://`` URLs (``endpoint_url``, ``anon``,
    ``client_kwargs``); ``http_timeout_s``: per request for ``http(s)://`` URLs.
    """

    storage_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    http_timeout_s: float = HTTP_TIMEOUT_S

    def fs_options(self, url: str) -> dict[str, Any]:
        """fsspec options for one URL's protocol."""
        proto = protocol(url)
        if proto in ("s3", "s3a"):
            return dict(self.storage_options)
        if proto in ("http", "https"):
            import aiohttp

            return {"client_kwargs": {"timeout": aiohttp.ClientTimeout(total=self.http_timeout_s)}}
        return {}


def protocol(url: str) -> str:
    """``s3``, ``https``, … or ``file`` for a local path."""
    if "://" not in url:
        return "file"
    return url.split("://", 1)[0].lower()


def is_remote(url: str) -> bool:
    return protocol(url) != "file"


def is_template(spec: str) -> bool:
    return bool(TEMPLATE_RE.search(spec))


def basename(url: str) -> str:
    """The file name of a path or URL, without query string or fragment (what attrs and the index record)."""
    if is_remote(url):
        url = url.split("#", 1)[0].split("?", 1)[0]
        return posixpath.basename(url.rstrip("/"))
    return Path(url).name


def display(url: str) -> str:
    """A URL as it may be logged or stored: userinfo and query values redacted."""
    return redact_url(url) if is_remote(url) else url


def _fs(url: str, opts: InputOptions | None) -> tuple[Any, str]:
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(url, **(opts or InputOptions()).fs_options(url))
        return fs, str(path)
    except Exception as exc:  # unknown protocol, bad options
        raise InputError(display(url), f"cannot reach this input ({type(exc).__name__}: {exc}).",
                         "check the URL and inputs.storage / store.endpoint_url in the config.") from None


def _not_found(exc: BaseException) -> bool:
    if isinstance(exc, FileNotFoundError):
        return True
    status = getattr(exc, "status", None) or getattr(exc, "code", None)
    return status == 404 or " 404" in str(exc)[:200]


# --------------------------------------------------------------------------------------------
# listing
# --------------------------------------------------------------------------------------------
def expand_template(template: str, days: Iterable[dt.date]) -> list[str]:
    """One URL per day (``{date:%Y%m%d}`` filled in), duplicates dropped, in day order."""
    out: list[str] = []
    seen: set[str] = set()
    for d in days:
        day = d.date() if isinstance(d, dt.datetime) else d

        def fill(m: re.Match[str], day: dt.date = day) -> str:
            return day.strftime(m.group("fmt")) if m.group("fmt") else day.isoformat()

        u = TEMPLATE_RE.sub(fill, template)
        if u not in seen:
            seen.add(u)
            out.append(u)
    return out


def exists(url: str, opts: InputOptions | None = None) -> bool:
    """Does the file exist? (HTTP 404 / missing key = False; other failures raise InputError.)"""
    if not is_remote(url):
        return os.path.isfile(url)
    fs, path = _fs(url, opts)
    try:
        if protocol(url) in ("http", "https"):
            fs.info(path)  # a HEAD (GET on servers without HEAD); raises FileNotFoundError on 404
            return True
        return bool(fs.isfile(path))
    except Exception as exc:
        if _not_found(exc):
            return False
        raise InputError(display(url), f"cannot check whether this input exists ({type(exc).__name__}: "
                                       f"{redact_url(str(exc))[:300]}).",
                         "check the URL, the network and the credentials in the environment.") from None


def probe(urls: Sequence[str], opts: InputOptions | None = None) -> dict[str, bool]:
    """``{url: exists}`` for many URLs, a few at a time (bounded threads, each request bounded)."""
    if not urls:
        return {}
    with ThreadPoolExecutor(max_workers=min(PROBE_THREADS, len(urls))) as pool:
        return dict(zip(urls, pool.map(lambda u: exists(u, opts), urls)))


def _glob_remote(pattern: str, opts: InputOptions | None) -> list[str]:
    proto = protocol(pattern)
    if proto in ("http", "https"):
        raise InputError(display(pattern), "an HTTP(S) URL cannot be listed, so it cannot be a glob.",
                         "give a list of URLs or a template with {date:%Y%m%d} (docs/inputs.md).")
    fs, path = _fs(pattern, opts)
    try:
        hits = fs.glob(path)
        hits = [h for h in hits if fs.isfile(h)]
    except Exception as exc:
        if _not_found(exc):
            return []
        raise InputError(display(pattern), f"cannot list ({type(exc).__name__}: {redact_url(str(exc))[:300]}).",
                         "check the bucket, endpoint_url and credentials in the environment.") from None
    return sorted(f"{proto}://{h.lstrip('/')}" for h in hits)


def _tree_remote(url: str, opts: InputOptions | None) -> list[str] | None:
    """Every file under a remote 'folder' (None if ``url`` is not one)."""
    if protocol(url) in ("http", "https"):
        return None
    fs, path = _fs(url, opts)
    try:
        if not fs.isdir(path):
            return None
        hits = fs.find(path)
    except Exception as exc:
        if _not_found(exc):
            return None
        raise InputError(display(url), f"cannot list ({type(exc).__name__}: {redact_url(str(exc))[:300]}).",
                         "check the bucket, endpoint_url and credentials in the environment.") from None
    proto = protocol(url)
    return sorted(f"{proto}://{h.lstrip('/')}" for h in hits)


def resolve(spec: Spec, what: str, opts: InputOptions | None = None, *, days: Iterable[dt.date] | None = None,
            tree: bool = False, required: bool = True) -> list[str]:
    """The files an ``inputs.*`` entry names, sorted within each part (a list keeps its order).

    Globs are listed (local or ``s3://``); a template is expanded over ``days`` and the URLs that
    do not exist yet (404) are left out; a plain path/URL must exist. ``tree``: a folder (local or
    an ``s3://`` prefix) stands for every file under it (an ISMN download). An InputError when
    nothing is found (unless not ``required``).
    """
    parts = [spec] if isinstance(spec, str) else list(spec)
    out: list[str] = []
    for part in parts:
        out.extend(_resolve_one(part, what, opts, days, tree))
    if not out and required:
        shown = display(spec) if isinstance(spec, str) else f"{len(parts)} entries, e.g. {display(parts[0])}" \
            if parts else "[]"
        raise InputError(shown, f"no {what} files match this path/pattern.",
                         f"check inputs.{what} in the config (paths are relative to the config file).")
    return out


def _resolve_one(part: str, what: str, opts: InputOptions | None, days: Iterable[dt.date] | None,
                 tree: bool) -> list[str]:
    if is_template(part):
        if days is None:
            raise InputError(display(part), f"a {{date}} template for inputs.{what}, but no days to fill in.",
                             "use a template only where the period is known (daily inputs).")
        urls = expand_template(part, days)
        found = probe(urls, opts)
        missing = [u for u in urls if not found[u]]
        if missing:
            log.info("inputs.%s: %d of %d file(s) of the template not available (yet), e.g. %s", what,
                     len(missing), len(urls), display(missing[0]))
        return [u for u in urls if found[u]]
    if not is_remote(part):
        if _glob.has_magic(part):
            return sorted(p for p in _glob.glob(part, recursive=True) if os.path.isfile(p))
        if tree and os.path.isdir(part):
            return sorted(str(p) for p in Path(part).rglob("*") if p.is_file() and "python_metadata" not in p.parts)
        return [part] if os.path.isfile(part) else []
    if _glob.has_magic(part.split("://", 1)[1].split("?", 1)[0]):
        return _glob_remote(part, opts)
    if tree:
        under = _tree_remote(part, opts)
        if under is not None:
            return [u for u in under if "/python_metadata/" not in u]
    return [part] if exists(part, opts) else []


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------
def open_input(url: str, opts: InputOptions | None = None, mode: str = "rb") -> Any:
    """A file object (local or remote): for readers that take file objects, and for hashing."""
    if not is_remote(url):
        return open(url, mode)
    fs, path = _fs(url, opts)
    return fs.open(path, mode)


def sha256(url: str, opts: InputOptions | None = None, bufsize: int = 1 << 20) -> str:
    """sha256 of one input, streamed (no local copy)."""
    h = hashlib.sha256()
    try:
        with open_input(url, opts) as f:
            while chunk := f.read(bufsize):
                h.update(chunk)
    except InputError:
        raise
    except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        why = str(exc) if not is_remote(url) else type(exc).__name__
        raise InputError(display(url), f"cannot read the file ({why}).", "check the path and permissions.") from None
    except Exception as exc:
        if _not_found(exc):
            raise InputError(display(url), "not found (it may have been removed since it was listed).",
                             "check the URL; re-run when the file is available.") from None
        raise InputError(display(url), f"cannot read the file ({type(exc).__name__}: {redact_url(str(exc))[:300]}).",
                         "check the URL, the network and the credentials in the environment.") from None
    return h.hexdigest()


class LocalCache:
    """Bounded scratch copies of remote inputs for readers that need a real path.

    One copy lives for one read (:meth:`local_paths` removes it on exit, also on errors); the
    bytes held at once by this process never exceed ``max_bytes`` (a read waits up to
    ``wait_s`` for room, a single file larger than the bound is an InputError). Copies keep the
    file's own name (``<root>/<token>/<name>``) so readers record the same ``source_file``.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None, max_bytes: int | None = None,
                 wait_s: float = COPY_TIMEOUT_S):
        self.root = Path(root or os.environ.get(CACHE_DIR_ENV) or
                         Path(tempfile.gettempdir()) / f"sm1km-input-cache-{os.getuid() if hasattr(os, 'getuid') else 0}")
        self.max_bytes = int(max_bytes if max_bytes is not None else
                             os.environ.get(CACHE_BYTES_ENV, DEFAULT_CACHE_BYTES))
        self.wait_s = float(wait_s)
        self._held = 0
        self._cond = threading.Condition()

    @property
    def held_bytes(self) -> int:
        return self._held

    def entries(self) -> list[str]:
        """Files currently in the cache folder (by any process using it)."""
        if not self.root.is_dir():
            return []
        return sorted(str(p) for p in self.root.rglob("*") if p.is_file())

    def _reserve(self, n: int, url: str) -> None:
        if n > self.max_bytes:
            raise InputError(display(url), f"the file ({n} bytes) is larger than the local input cache "
                                           f"({self.max_bytes} bytes).",
                             f"raise {CACHE_BYTES_ENV} on the workers (and give them that much scratch disk).")
        deadline = time.monotonic() + self.wait_s
        with self._cond:
            while self._held + n > self.max_bytes:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise InputError(display(url), f"no room in the local input cache for {n} bytes within "
                                                   f"{self.wait_s:g} s.",
                                     f"raise {CACHE_BYTES_ENV} or run fewer threads per worker.")
                self._cond.wait(timeout=left)
            self._held += n

    def _release(self, n: int) -> None:
        with self._cond:
            self._held -= n
            self._cond.notify_all()

    def _copy(self, url: str, opts: InputOptions | None, dest: Path, size: int) -> None:
        cap = size if size > 0 else self.max_bytes
        deadline = time.monotonic() + self.wait_s
        n = 0
        try:
            with open_input(url, opts) as src, open(dest, "wb") as out:
                while chunk := src.read(1 << 20):
                    n += len(chunk)
                    if n > cap:
                        raise InputError(display(url), f"the file grew past {cap} bytes while being copied.",
                                         f"check the source; raise {CACHE_BYTES_ENV} for larger files.")
                    if time.monotonic() > deadline:
                        raise InputError(display(url), f"copying took longer than {self.wait_s:g} s.",
                                         "check the network to the input's server.")
                    out.write(chunk)
        except InputError:
            raise
        except Exception as exc:
            if _not_found(exc):
                raise InputError(display(url), "not found (it may have been removed since it was listed).",
                                 "check the URL; re-run when the file is available.") from None
            raise InputError(display(url), f"cannot copy the file ({type(exc).__name__}: "
                                           f"{redact_url(str(exc))[:300]}).",
                             "check the URL, the network and the credentials in the environment.") from None

    @contextlib.contextmanager
    def local_paths(self, urls: Sequence[str], opts: InputOptions | None = None) -> Iterator[list[str]]:
        """Local paths for ``urls`` (local paths unchanged, remote files copied here) for the
        duration of the block; copies removed on exit. An InputError raised inside the block
        that names a copy names its URL instead (redacted)."""
        folder: Path | None = None
        held = 0
        local: list[str] = []
        copies: dict[str, str] = {}
        try:
            for url in urls:
                if not is_remote(url):
                    local.append(url)
                    continue
                if folder is None:
                    folder = self.root / uuid.uuid4().hex
                    folder.mkdir(parents=True, exist_ok=True)
                fs, path = _fs(url, opts)
                try:
                    size = int(fs.size(path) or 0)
                except Exception as exc:
                    if _not_found(exc):
                        raise InputError(display(url), "not found (it may have been removed since it was listed).",
                                         "check the URL; re-run when the file is available.") from None
                    size = 0
                need = size if size > 0 else self.max_bytes
                self._reserve(need, url)
                held += need
                sub = folder / str(len(local))  # one sub-folder per file: equal names from two URLs
                sub.mkdir()
                dest = sub / (basename(url) or "input")
                self._copy(url, opts, dest, size)
                local.append(str(dest))
                copies[str(dest)] = display(url)
            try:
                yield local
            except InputError as exc:
                where = exc.where
                for p, u in copies.items():
                    where = where.replace(p, u)
                if where == exc.where:
                    raise
                raise type(exc)(where, exc.problem, exc.fix) from None
        finally:
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
            if held:
                self._release(held)


_default_cache: LocalCache | None = None
_default_lock = threading.Lock()


def default_cache() -> LocalCache:
    """This process's cache (``$SM1KM_INPUT_CACHE``, bounded by ``$SM1KM_INPUT_CACHE_BYTES``)."""
    global _default_cache
    with _default_lock:
        root = os.environ.get(CACHE_DIR_ENV)
        size = int(os.environ.get(CACHE_BYTES_ENV, DEFAULT_CACHE_BYTES))
        if _default_cache is None or (root and Path(root) != _default_cache.root) or size != _default_cache.max_bytes:
            _default_cache = LocalCache(root, size)
        return _default_cache


def local_paths(urls: Sequence[str], opts: InputOptions | None = None) -> contextlib.AbstractContextManager[list[str]]:
    """:meth:`LocalCache.local_paths` of :func:`default_cache`."""
    return default_cache().local_paths(urls, opts)


def any_remote(urls: Iterable[str | os.PathLike[str] | None]) -> bool:
    return any(u is not None and is_remote(os.fspath(u)) for u in urls)


__all__ = ["InputOptions", "LocalCache", "default_cache", "local_paths", "resolve", "expand_template", "probe",
           "exists", "open_input", "sha256", "basename", "display", "is_remote", "is_template", "any_remote",
           "protocol", "TEMPLATE_RE", "CACHE_DIR_ENV", "CACHE_BYTES_ENV"]
