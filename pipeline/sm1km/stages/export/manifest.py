"""What each exported file was computed from: per-file deps digests and the export's manifest.

An export grows with its source store (the master gains days; an upstream day is revised and its
time block recomputed), so "the file exists" is not enough to skip it. Each file gets a **deps
digest**: the sha256 (:func:`sm1km.storage.deps.digest_of`) of

* the deps digests of what the file's days were computed from, finest grain first: per day from
  the source's ``_ledger/<store>/days.json`` (:class:`~sm1km.storage.master.DayDigests`, recorded
  by downscale), else per **time block** from ``_ledger/<store>/blocks.json``
  (:class:`~sm1km.storage.deps.BlockDigests`), else (a store written before dependency tracking)
  the content of the block's shard objects of the exported variables (S3: their ETags from one
  listing, nothing downloaded; local: the bytes hashed);
* the file's days (the store's dates it holds, so a month that gained days changes) and the
  export options that change its bytes (format, layout, variables, box, compression, tile).

The digest is written **into the file** (GeoTIFF tag / HDF5 or netCDF global attribute ``sm1km_deps``) and into the
export folder's manifest ``<out>/_manifest.json`` (``{"files": {name: {"deps", "time_coverage_start",
"time_coverage_end", "n_days"[, "empty"]}}}``), which the driver writes once, after the file tasks,
and only when it changed. A file is up to date when its manifest entry carries the current digest;
a file present without one (killed before the manifest was written, or written by an older
version) is read for its embedded digest and kept if it matches, else rewritten. The manifest is a
cache; the file is the truth — so a kill at any point never keeps a stale file.
"""

from __future__ import annotations

import hashlib
import logging
import posixpath
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sm1km.storage import store
from sm1km.storage.deps import BlockDigests, digest_of

log = logging.getLogger(__name__)

MANIFEST = "_manifest.json"
MANIFEST_VERSION = 1
#: name of the GeoTIFF tag / HDF5 attribute holding a file's deps digest
DEPS_ATTR = "sm1km_deps"

_TIME_KEY = re.compile(r"(?:^|_)time-(\d+)-(\d+)(?:_|$)")
_DATE_KEY = re.compile(r"^\d{4}-\d{2}-\d{2}$")

Block = tuple[int, int, str]  # store time indices [t0, t1) and their deps digest


# ---------------------------------------------------------------------------------------------- blocks
def _recorded(root: str, store_name: str, so: Mapping[str, Any] | None) -> dict[str, str]:
    for name in (store_name, store_name.removesuffix(".zarr")):
        rec = BlockDigests(root, name, so).read()
        if rec:
            return rec
    return {}


def _parse_key(key: str, times: Sequence[str], time_unit: int) -> tuple[int, int] | None:
    m = _TIME_KEY.search(key)
    if m:
        return int(m[1]), int(m[2])
    if _DATE_KEY.match(key) and key in times:
        i = list(times).index(key)
        return i, i + int(time_unit)
    return None


def _content_digests(url: str, so: Mapping[str, Any] | None, variables: Iterable[str], chunks: set[int],
                     time_unit: int) -> dict[int, str]:
    """{outer time chunk index: digest of its shard objects} for ``chunks`` (one listing per variable)."""
    fs, path = store.filesystem(url, so)
    per_chunk: dict[int, list[tuple[str, str]]] = {k: [] for k in chunks}
    remote = store.is_remote(url)
    for v in sorted(variables):
        base = posixpath.join(path.rstrip("/"), v, "c")
        fs.invalidate_cache(base)
        try:
            found = fs.find(base, detail=True)
        except FileNotFoundError:
            found = {}
        for p, info in sorted(found.items()):
            rel = p[len(base) + 1:]
            head = rel.split("/", 1)[0]
            if not head.isdigit() or int(head) not in per_chunk:
                continue
            tag = info.get("ETag") or info.get("etag") if remote else None
            if not tag:
                with fs.open(p, "rb") as fh:
                    tag = hashlib.sha256(fh.read()).hexdigest()
            per_chunk[int(head)].append((f"{v}/{rel}", str(tag).strip('"')))
    return {k: digest_of({"content": items, "time_unit": int(time_unit)}) for k, items in per_chunk.items()}


def _recorded_days(root: str, store_name: str, so: Mapping[str, Any] | None) -> dict[str, str]:
    from sm1km.storage.master import DayDigests

    for name in (store_name, store_name.removesuffix(".zarr")):
        rec = DayDigests(root, name, so).read()
        if rec:
            return dict(rec)
    return {}


def source_blocks(root: str, store_name: str, source, variables: Sequence[str],
                  so: Mapping[str, Any] | None = None) -> list[Block]:
    """The source store's time blocks with their deps digests, finest grain first: a day with a
    recorded day digest (``days.json``) is a block of its own; the other days take their recorded
    time block's digest (``blocks.json``), else their shard content's."""
    n = int(source.shape[0])
    unit = max(1, int(source.time_unit))
    blocks: list[Block] = []
    covered = [False] * n
    days = _recorded_days(root, store_name, so)
    for i, t in enumerate(source.times):
        if t in days:
            blocks.append((i, i + 1, f"day:{t}:{days[t]}"))
            covered[i] = True
    by_day = list(covered)
    for key, d in sorted(_recorded(root, store_name, so).items()):
        span = _parse_key(key, source.times, unit)
        if span is None:  # a key this version cannot place: every file depends on it
            span = (0, n)
        t0, t1 = max(0, span[0]), min(n, span[1])
        if t0 >= t1 or all(by_day[t0:t1]):
            continue
        blocks.append((t0, t1, f"{key}:{d}"))
        for i in range(t0, t1):
            covered[i] = True
    missing = {i // unit for i in range(n) if not covered[i]}
    if missing:
        for k, d in _content_digests(source.url, source.storage_options, variables, missing, unit).items():
            blocks.append((k * unit, min(n, (k + 1) * unit), f"content:{d}"))
    return sorted(blocks)


def file_deps(blocks: Sequence[Block], t_indices: Sequence[int], times: Sequence[str],
              options: Mapping[str, Any]) -> str:
    """Deps digest of a file holding store time steps ``t_indices`` (see the module docstring)."""
    idx = sorted(int(i) for i in t_indices)
    lo, hi = idx[0], idx[-1] + 1
    touched = [b for b in blocks if b[0] < hi and lo < b[1] and any(b[0] <= i < b[1] for i in idx)]
    return digest_of({"v": MANIFEST_VERSION, "days": [times[i] for i in idx], "blocks": touched,
                      "options": dict(options)})


# ---------------------------------------------------------------------------------------------- manifest
def manifest_url(out: str) -> str:
    return store.join(out, MANIFEST)


def read_manifest(out: str, so: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """{file name: entry} of the export folder ({} without a manifest or with an unreadable one)."""
    try:
        doc = store.read_json(manifest_url(out), so)
    except ValueError:
        log.warning("%s is not valid JSON: every file is checked against its own digest", manifest_url(out))
        return {}
    if not isinstance(doc, dict) or doc.get("version") != MANIFEST_VERSION:
        return {}
    return dict(doc.get("files") or {})


def write_manifest(out: str, so: Mapping[str, Any] | None, files: Mapping[str, Mapping[str, Any]],
                   before: Mapping[str, Mapping[str, Any]]) -> bool:
    """Write the manifest if ``files`` differs from ``before``; True if written."""
    if dict(files) == dict(before):
        return False
    store.write_json(manifest_url(out), {"version": MANIFEST_VERSION, "files": dict(files)}, so, indent=1,
                     newline=True)
    return True


def embedded_deps(url: str, so: Mapping[str, Any] | None) -> str | None:
    """The deps digest written into an exported file (None: none, or the file cannot be read)."""
    fs, path = store.filesystem(url, so)
    try:
        if path.endswith((".h5", ".nc")):  # a netCDF-4 file is an HDF5 file
            import h5py

            with fs.open(path, "rb") as fh, h5py.File(fh, "r") as f:
                v = f.attrs.get(DEPS_ATTR)
        else:
            import rasterio

            if store.is_remote(url):
                with fs.open(path, "rb") as fh, rasterio.open(fh) as ds:
                    v = ds.tags().get(DEPS_ATTR)
            else:
                with rasterio.open(path) as ds:
                    v = ds.tags().get(DEPS_ATTR)
    except Exception as exc:  # a torn or foreign file: it is rewritten
        log.info("%s: no readable deps digest (%s: %s); it is rewritten", url, type(exc).__name__, exc)
        return None
    if isinstance(v, bytes):
        v = v.decode()
    return str(v) if v is not None else None


__all__ = ["MANIFEST", "MANIFEST_VERSION", "DEPS_ATTR", "source_blocks", "file_deps", "read_manifest",
           "write_manifest", "embedded_deps", "manifest_url"]
