"""Publishing stores to readers over HTTP, and updating them while they are being read.

Readers open a store with ``xarray.open_zarr(url)``: one GET of the root ``zarr.json`` (attributes +
consolidated metadata of every array), then GETs of chunk objects — whole objects, or for sharded
arrays a *suffix* Range request for the shard index followed by Range requests for inner chunks.
Readers never list and never read an array's own ``zarr.json``. The guarantees below follow from
that (details and tests: docs/reading.md, tests/test_publish.py).

1. **Publishing is one write.** :func:`sm1km.storage.store.finalize` writes the attributes and the
   consolidated metadata in one atomic write of the root ``zarr.json`` — the last write of a stage.
2. **Appending days** (a store grows in time): :func:`extend_time` grows the arrays' own metadata
   and writes the new time values; the root ``zarr.json`` is not touched, so the new days stay
   invisible. New days are then written with :func:`write_packed_preserving` (one task per shard)
   and made visible by ``store.finalize``. Objects that only hold new days are new keys. The one
   shard per tile that holds both published and new days (the last, partly filled time block) is
   rewritten *prefix-preserving*: every chunk keeps its old bytes at their old offsets and changed
   chunks are appended behind them, with a new index at the end. A reader that fetched the old
   index and then reads chunk ranges from the replaced object still finds exactly the bytes the
   old index points at; a reader that fetches the new index reads new chunks whose published days
   are bit-identical. Each object is replaced by one atomic PUT (S3) or rename (local).
3. **Reprocessing** (published values change): never in place — that would show readers a mix of
   old and new shards. The new version is written as a complete new run root (``store.root``),
   checked, and then :func:`sm1km.stages.publish.promote` switches the small pointer ``published.json`` (and the STAC
   catalog) under a stable public prefix to it, in one atomic write. The old version stays
   unchanged for readers that hold its URL; remove it after a grace period.

For public reading from S3 without credentials, :func:`public_read_policy` is the bucket policy
(``s3:GetObject`` only: no listing is needed or granted).
"""

from __future__ import annotations

import json
import logging
import posixpath
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd
import zarr

from sm1km.storage import store
from sm1km.errors import ConfigError, StoreError
from sm1km.storage.shard_codec import EMPTY, encode_index, index_layout_ok, sharding_codec

log = logging.getLogger(__name__)

POINTER = "published.json"
POINTER_FORMAT = 1
PRODUCT_STORES = {"fused": "fused.zarr", "master": "master.zarr", "monthly": "monthly.zarr"}


# --------------------------------------------------------------------------------------------
# what a reader sees
# --------------------------------------------------------------------------------------------
def read_root_metadata(url: str, storage_options: Mapping[str, Any] | None = None) -> dict:
    """The root ``zarr.json`` as a dict (what an HTTP reader fetches first)."""
    fs, path = store.filesystem(store.join(url, "zarr.json"), storage_options)
    try:
        return json.loads(fs.cat_file(path))
    except FileNotFoundError:
        raise StoreError(url, "no zarr.json: not a Zarr v3 store.", "check the URL.") from None


def check_published(url: str, storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Check that a store is readable over HTTP without listing; returns a short summary.

    Requires: consolidated metadata in the root ``zarr.json`` that lists every array of the store
    with the same shape as the array's own metadata (i.e. finalize ran after the last write),
    and CF packing attributes on every int16 variable with a ``scale_factor``.
    """
    root = read_root_metadata(url, storage_options)
    cons = (root.get("consolidated_metadata") or {}).get("metadata")
    if not cons:
        raise StoreError(url, "the store has no consolidated metadata (HTTP readers cannot open it without "
                              "listing).", "finish the stage that writes it (its last step is store.finalize).")
    g = zarr.open_group(store._zarr_target(url, storage_options), mode="r", zarr_format=3, use_consolidated=False)
    actual = {name: node.metadata.to_dict() for name, node in g.members(max_depth=None)}
    missing = sorted(set(actual) - set(cons))
    stale = sorted(n for n in actual if n in cons and
                   list(actual[n].get("shape") or []) != list(cons[n].get("shape") or []))
    if missing or stale:
        raise StoreError(url, f"consolidated metadata is out of date (missing: {missing}, other shape: {stale}).",
                         "finish the update: run store.finalize on the store (the stage's last step).")
    for name, meta in cons.items():
        attrs = meta.get("attributes", {})
        if meta.get("data_type") == "int16" and "scale_factor" in attrs:
            for key in ("_FillValue", "units", "add_offset"):
                if key not in attrs:
                    raise StoreError(url, f"variable {name!r} lacks the CF attribute {key!r}.",
                                     "write the store from the master/monthly templates (sm1km.storage.master).")
    attrs = root.get("attributes", {})
    shapes = {n: m.get("shape") for n, m in cons.items() if m.get("node_type") == "array"}
    return {"url": url, "arrays": shapes, "time_coverage_start": attrs.get("time_coverage_start"),
            "time_coverage_end": attrs.get("time_coverage_end"), "last_updated": attrs.get("last_updated")}


def public_read_policy(bucket: str, prefix: str = "") -> dict[str, Any]:
    """S3 bucket policy letting anyone GET objects under ``prefix`` (no listing, no writes)."""
    resource = f"arn:aws:s3:::{bucket}/{prefix.strip('/') + '/' if prefix.strip('/') else ''}*"
    return {"Version": "2012-10-17",
            "Statement": [{"Sid": "sm1kmPublicRead", "Effect": "Allow", "Principal": "*",
                           "Action": "s3:GetObject", "Resource": resource}]}


# --------------------------------------------------------------------------------------------
# appending days
# --------------------------------------------------------------------------------------------
def _time_dim_arrays(group: zarr.Group) -> list[tuple[str, Any]]:
    out = []
    for name, node in group.members():
        if isinstance(node, zarr.Array) and "time" in (node.metadata.dimension_names or ()):
            out.append((name, node))
    return out


def extend_time(url: str, new_times: Iterable, storage_options: Mapping[str, Any] | None = None
                ) -> tuple[int, int]:
    """Grow every ``time`` array of a store by ``new_times`` (after its last published day);
    readers see nothing yet. Returns (published length, new length).

    Writes the arrays' own ``zarr.json`` (new shape) and the new values of the ``time`` coordinate;
    the root ``zarr.json`` — all that HTTP readers read — is untouched until ``store.finalize``.
    New data values are written afterwards with :func:`write_packed_preserving` (other arrays along
    ``time`` without chunked data, e.g. ``time_bnds`` of monthly.zarr, too). The published length
    (from the consolidated metadata) is the starting point, so a re-run after a crash, or with
    other days, redoes the extension from there; days already published are skipped.
    """
    from xarray.coding.times import decode_cf_datetime, encode_cf_datetime

    g = zarr.open_group(store._zarr_target(url, storage_options), mode="r+", zarr_format=3, use_consolidated=False)
    tarr = g["time"]
    units, calendar = tarr.attrs.get("units"), tarr.attrs.get("calendar", "proleptic_gregorian")
    if not units:
        raise StoreError(url, "the time coordinate has no CF units.", "write the store from the sm1km templates.")
    cons = (read_root_metadata(url, storage_options).get("consolidated_metadata") or {}).get("metadata") or {}
    n_pub = int(cons["time"]["shape"][0]) if "time" in cons else int(tarr.shape[0])
    old = pd.DatetimeIndex(decode_cf_datetime(np.asarray(tarr[:n_pub]), units, calendar))
    new = pd.DatetimeIndex(pd.to_datetime(list(new_times)))
    new = new[new > old.max()] if len(old) else new
    if len(new) == 0:
        return n_pub, n_pub
    if not new.is_monotonic_increasing or new.has_duplicates:
        raise ConfigError("new_times", "the days to append are not strictly increasing.", "pass sorted unique days.")
    n_new = n_pub + len(new)
    for name, arr in _time_dim_arrays(g):
        axis = list(arr.metadata.dimension_names).index("time")
        if arr.shape[axis] != n_new:
            shape = list(arr.shape)
            shape[axis] = n_new
            arr.resize(tuple(shape))  # chunks beyond the published shape only: invisible
    num, _, _ = encode_cf_datetime(new.values, units, calendar, dtype=np.dtype(tarr.dtype))
    g["time"][n_pub:n_new] = np.asarray(num, dtype=tarr.dtype)
    log.info("store %s: time axis %d -> %d days (invisible until finalize)", url, n_pub, n_new)
    return n_pub, n_new


def _decode_index(shard: bytes, n_chunks: int) -> np.ndarray:
    """(n_chunks, 2) uint64 offsets/lengths from the end of a shard (little endian + crc32c)."""
    import google_crc32c

    size = 16 * n_chunks + 4
    tail = shard[-size:]
    raw, crc = tail[:-4], int.from_bytes(tail[-4:], "little")
    if google_crc32c.value(raw) != crc:
        raise StoreError("shard", "the shard index checksum does not match.", "the object is corrupt; rewrite it.")
    return np.frombuffer(raw, dtype="<u8").reshape(n_chunks, 2).copy()


def preserve_prefix(old: bytes | None, new: bytes | None, n_chunks: int) -> bytes:
    """Pure: a shard equal in content to ``new`` in which every chunk of ``old`` keeps its bytes
    at its old offset (unchanged chunks are shared, changed ones appended after the old data).

    So the index of ``old`` stays valid for the returned object: a reader that fetched the old
    index and then reads ranges of the replaced object gets the old chunks, byte for byte.
    ``new=None`` is a shard whose chunks are all empty (fill).
    """
    if not old:
        return new if new is not None else encode_index(np.full((n_chunks, 2), EMPTY, dtype="<u8"))
    isz = 16 * n_chunks + 4
    old_idx = _decode_index(old, n_chunks)
    new_idx = _decode_index(new, n_chunks) if new is not None else np.full((n_chunks, 2), EMPTY, dtype="<u8")
    body = bytearray(old[: len(old) - isz])
    out_idx = np.empty_like(new_idx)
    for i in range(n_chunks):
        off, nb = new_idx[i]
        if off == EMPTY and nb == EMPTY:
            out_idx[i] = (EMPTY, EMPTY)
            continue
        chunk = new[int(off): int(off) + int(nb)]
        ooff, onb = old_idx[i]
        if not (ooff == EMPTY and onb == EMPTY) and onb == nb and old[int(ooff): int(ooff) + int(onb)] == chunk:
            out_idx[i] = (ooff, onb)
        else:
            out_idx[i] = (len(body), nb)
            body += chunk
    return bytes(body) + encode_index(out_idx)


def _touched_keys(arr, sel: tuple[slice, ...], grid_shape) -> list[str]:
    """Storage keys of the objects (shards or chunks) that the selection ``sel`` touches."""
    bounds = [s.indices(n)[:2] for s, n in zip(sel, arr.shape)]
    ranges = [range(a // s, -(-b // s)) for (a, b), s in zip(bounds, grid_shape)]
    return [arr.metadata.encode_chunk_key(tuple(r[i] for r, i in zip(ranges, c)))
            for c in np.ndindex(*[len(r) for r in ranges])]


def write_packed_preserving(url: str, region: Mapping[str, slice], arrays: Mapping[str, np.ndarray],
                            storage_options: Mapping[str, Any] | None = None) -> dict[str, int]:
    """Write packed arrays into ``region`` like :func:`sm1km.storage.master.write_packed`, safe for readers.

    Every shard the region touches is computed by zarr in memory (from its current bytes), then
    rewritten with :func:`preserve_prefix` in one atomic write; unsharded chunks are whole objects
    (replaced atomically by zarr's stores). One call = one task = whole shard(s): never let two
    tasks write into one shard. Returns {array: objects written}.
    """
    from zarr.core.buffer import default_buffer_prototype
    from zarr.storage import MemoryStore

    target = store._zarr_target(url, storage_options)
    g = zarr.open_group(target, mode="r", zarr_format=3, use_consolidated=False)
    fs, root = store.filesystem(url, storage_options)
    proto = default_buffer_prototype()
    written: dict[str, int] = {}
    for name, data in arrays.items():
        arr = g[name]
        sel = tuple(region.get(d, slice(None)) for d in arr.metadata.dimension_names)
        keys = [f"{name}/{k}" for k in _touched_keys(arr, sel, arr.metadata.chunk_grid.chunk_shape)]
        codec = sharding_codec(arr)
        if codec is None:  # whole chunk objects: zarr's stores replace each one atomically
            zarr.open_group(target, mode="r+", zarr_format=3, use_consolidated=False)[name][sel] = data
            written[name] = len(keys)
            continue
        if not index_layout_ok(codec):
            raise StoreError(url, f"array {name!r} has a shard index layout this writer does not handle.",
                             "use the master/monthly templates (index at the end, little endian + crc32c).")
        n_chunks = int(np.prod([s // c for s, c in zip(arr.metadata.chunk_grid.chunk_shape, codec.chunk_shape)]))
        mem: dict[str, Any] = {f"{name}/zarr.json": proto.buffer.from_bytes(
            fs.cat_file(posixpath.join(root, name, "zarr.json")))}
        old: dict[str, bytes | None] = {}
        for key in keys:
            try:
                old[key] = fs.cat_file(posixpath.join(root, key))
                mem[key] = proto.buffer.from_bytes(old[key])
            except FileNotFoundError:
                old[key] = None
        zarr.open_array(MemoryStore(mem), path=name, mode="r+", zarr_format=3)[sel] = data
        n = 0
        for key in keys:
            new = mem[key].to_bytes() if key in mem else None  # None: every chunk is fill
            if new is None and old[key] is None:
                continue
            payload = preserve_prefix(old[key], new, n_chunks)
            if payload != old[key]:
                store.put_atomic(store.join(url, key), payload, storage_options)
                n += 1
        written[name] = n
    return written


def append_days(url: str, new_times: Iterable, blocks: Iterable[tuple[Mapping[str, slice], Mapping[str, np.ndarray]]],
                storage_options: Mapping[str, Any] | None = None, attrs: Mapping[str, Any] | None = None) -> int:
    """Append days to a published store in the safe order: extend (invisible) → write blocks → finalize.

    ``blocks``: (region, {array: packed data}) pairs, region indices in the *new* time axis, one per
    shard (a driver would submit them as tasks). Returns the new number of days.
    """
    n_old, n_new = extend_time(url, new_times, storage_options)
    for region, arrays in blocks:
        write_packed_preserving(url, region, arrays, storage_options)
    times = store.open_dataset(url, storage_options, consolidated=False)["time"].values
    store.finalize(url, storage_options, {**store.coverage_attrs(times), **dict(attrs or {})})
    log.info("store %s: published %d new days (%d in all)", url, n_new - n_old, n_new)
    return n_new


def resolve(public_url: str, product: str = "master", storage_options: Mapping[str, Any] | None = None) -> str:
    """URL of the published store of ``product`` (reads ``published.json``; works over http(s) too)."""
    fs, path = store.filesystem(store.join(public_url, POINTER), storage_options)
    try:
        doc = json.loads(fs.cat_file(path))
    except FileNotFoundError:
        raise StoreError(public_url, "nothing published here (no published.json).", "run promote first.") from None
    try:
        return store.join(public_url, doc["products"][product]["href"])
    except KeyError:
        raise StoreError(public_url, f"product {product!r} is not published.",
                         f"published: {sorted(doc.get('products', {}))}.") from None
