"""Appending days to a published store while it is being read (guarantee 2 of :mod:`sm1km.storage.publish`).

:func:`extend_time` grows the arrays' own metadata and writes the new time values; the root
``zarr.json`` — all that HTTP readers read — is not touched, so the new days stay invisible. New
days are then written with :func:`write_packed_preserving` (one task per shard) and made visible by
``store.finalize``; :func:`append_days` does the three in that order. Objects that only hold new
days are new keys. The one shard per tile that holds both published and new days (the last, partly
filled time block) is rewritten *prefix-preserving* (:func:`preserve_prefix`): every chunk keeps its
old bytes at their old offsets and changed chunks are appended behind them, with a new index at the
end. A reader that fetched the old index and then reads chunk ranges from the replaced object still
finds exactly the bytes the old index points at; a reader that fetches the new index reads new
chunks whose published days are bit-identical. Each object is replaced by one atomic PUT (S3) or
rename (local), :func:`sm1km.storage.store.put_atomic`.

:func:`grow_store` is what a stage calls first: create the store from its template, or check that
the existing one holds a prefix of the run's days and extend it (the master and monthly.zarr; the
master's packed shards then go through ``master.write_packed(preserve=True)``, the same rule
without zarr's per-chunk encode).
"""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pandas as pd
import zarr

from sm1km.errors import ConfigError, StoreError
from sm1km.storage import store
from sm1km.storage.attrs import coverage_attrs
from sm1km.storage.publish import read_root_metadata
from sm1km.storage.shard_codec import EMPTY, decode_index, encode_index, index_layout_ok, sharding_codec

if TYPE_CHECKING:
    from zarr.core.chunk_grids import RegularChunkGrid

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
def _time_dim_arrays(group: zarr.Group) -> list[tuple[str, zarr.Array[Any]]]:
    out = []
    for name, node in group.members():
        if isinstance(node, zarr.Array) and "time" in (store.v3_metadata(node).dimension_names or ()):
            out.append((name, node))
    return out


def _dims(arr: zarr.Array[Any]) -> tuple[str, ...]:
    """The array's dimension names (sm1km's templates name every dimension)."""
    return cast("tuple[str, ...]", store.v3_metadata(arr).dimension_names)


def _grid_shape(arr: zarr.Array[Any]) -> tuple[int, ...]:
    """The shape of the array's stored objects (shards, or chunks if unsharded): zarr 3.1 writes a
    regular chunk grid only."""
    return cast("RegularChunkGrid", store.v3_metadata(arr).chunk_grid).chunk_shape


def extend_time(url: str, new_times: Iterable[Any], storage_options: Mapping[str, Any] | None = None
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

    g = store.open_group(url, storage_options, mode="r+", use_consolidated=False)
    tarr = store.array(g, "time")
    units = cast("str | None", tarr.attrs.get("units"))
    calendar = cast("str", tarr.attrs.get("calendar", "proleptic_gregorian"))
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
    for _name, arr in _time_dim_arrays(g):
        axis = list(_dims(arr)).index("time")
        if arr.shape[axis] != n_new:
            shape = list(arr.shape)
            shape[axis] = n_new
            arr.resize(tuple(shape))  # chunks beyond the published shape only: invisible
    num, _, _ = encode_cf_datetime(new.values, units, calendar, dtype=np.dtype(tarr.dtype))
    store.array(g, "time")[n_pub:n_new] = np.asarray(num, dtype=tarr.dtype)
    log.info("store %s: time axis %d -> %d days (invisible until finalize)", url, n_pub, n_new)
    return n_pub, n_new


def published_length(url: str, storage_options: Mapping[str, Any] | None = None) -> int:
    """Days a reader sees: the time length in the root's consolidated metadata (the ``time``
    array's own length when the store was never finalized)."""
    try:
        root = read_root_metadata(url, storage_options)
    except ValueError as exc:  # not JSON / not UTF-8
        raise StoreError(url, f"the root zarr.json cannot be read ({exc}).",
                         "the store is corrupt: check it with `sm1km verify`, or re-run the stage that writes it.") from None
    cons = (root.get("consolidated_metadata") or {}).get("metadata") or {}
    if "time" in cons:
        return int(cons["time"]["shape"][0])
    g = store.open_group(url, storage_options, use_consolidated=False)
    return int(store.array(g, "time").shape[0])


#: ledger key (``_ledger/<store>/template.json``) written once a store's template is complete; not a
#: unit (no region key): a store without it and without unit markers was left half-created
TEMPLATE_MARK = "template"


def _ledger_of(url: str, storage_options: Mapping[str, Any] | None) -> store.Ledger:
    """The ledger of the store at ``url`` (``<root>/_ledger/<store name>``: the stores grown here
    live at the top of ``store.root``)."""
    root, name = url.rstrip("/").rsplit("/", 1)
    return store.Ledger(root, name, storage_options)


def _template_complete(ledger: store.Ledger) -> bool:
    """Was the existing store's template written to the end? Its mark, or (stores from before the
    mark) any unit marker or the block record: units are written only after the template."""
    keys = ledger.keys()
    return TEMPLATE_MARK in keys or "blocks" in keys or any(k.startswith(("lat-", "lon-", "time-")) for k in keys)


def _consolidated(url: str, storage_options: Mapping[str, Any] | None) -> bool:
    """Does the root ``zarr.json`` hold consolidated metadata (the store was published)?"""
    try:
        return bool(read_root_metadata(url, storage_options).get("consolidated_metadata"))
    except (StoreError, OSError):
        return False


def grow_store(url: str, template: Any, encoding: Mapping[str, Mapping[str, Any]] | None = None,
               storage_options: Mapping[str, Any] | None = None) -> tuple[int, int]:
    """Create a store from ``template`` (an xarray Dataset with a ``time`` coordinate), or grow an
    existing one whose days are a prefix of the template's: ``(published days, days now)``.

    A new store: :func:`sm1km.storage.store.create_template` (``(0, n)``), then the template mark
    (:data:`TEMPLATE_MARK`) in its ledger; an existing one without that mark (nor unit markers), never
    published, was left half-created by a killed run and is created again. An existing one must hold
    the template's variables with the same non-time shape, and its published days must be the first
    days of the template's time axis (same start, day by day); the missing days are added with
    :func:`extend_time` (invisible to readers until ``store.finalize``). Anything else — other
    variables or grid, another start, more days than the template — is a StoreError: a store never
    shrinks and a published day never moves.
    """
    from xarray.coding.times import decode_cf_datetime

    times = pd.DatetimeIndex(template["time"].values)
    ledger = _ledger_of(url, storage_options)
    exists = store.exists(url, storage_options)
    half_created = exists and not _template_complete(ledger) and not _consolidated(url, storage_options)
    if half_created:
        # a run killed while it wrote the template (metadata, coordinates), before any unit: nothing in it
        # is computed or published, so it is written again rather than refused as a foreign layout
        log.warning("%s was left half-created by an interrupted run: writing its template again", url)
    if not exists or half_created:
        store.create_template(url, template, encoding, storage_options, overwrite=exists)
        ledger.mark(TEMPLATE_MARK, {"store": posixpath.basename(url.rstrip("/"))})  # the template is complete
        return 0, len(times)
    g = store.open_group(url, storage_options, use_consolidated=False)
    members = dict(g.members())
    for name in template.data_vars:
        want = template[name]
        arr = members.get(str(name))
        if not isinstance(arr, zarr.Array):
            raise StoreError(url, f"the existing store has no array {name!r}.",
                             "choose another store.root, or remove the old store if it is obsolete.")
        dims = list(store.v3_metadata(arr).dimension_names or ())
        if dims != list(want.dims) or any(arr.shape[i] != want.shape[i] for i, d in enumerate(dims) if d != "time"):
            raise StoreError(url, f"a store with a different layout already exists ({name}: {dict(zip(dims, arr.shape))}, "
                                  f"the run needs {dict(want.sizes)}).",
                             "choose another store.root, or remove the old store if it is obsolete.")
    n_pub = published_length(url, storage_options)
    tarr = store.array(g, "time")
    units = cast("str | None", tarr.attrs.get("units"))
    if not units:
        raise StoreError(url, "the time coordinate has no CF units.", "write the store from the sm1km templates.")
    have = pd.DatetimeIndex(decode_cf_datetime(np.asarray(tarr[:n_pub]), units,
                                               cast("str", tarr.attrs.get("calendar", "proleptic_gregorian"))))
    if n_pub > len(times) or not have.equals(times[:n_pub]):
        span = f"{have[0].date()} .. {have[-1].date()}, {n_pub} days" if n_pub else "no days"
        raise StoreError(url, f"the existing store ({span}) is not a prefix of the run's period "
                              f"({times[0].date()} .. {times[-1].date()}, {len(times)} days).",
                         "keep period.start and extend period.end only; to reprocess, write a new store.root "
                         "and promote it (`sm1km publish`).")
    if n_pub < len(times):
        extend_time(url, times[n_pub:], storage_options)
    elif int(tarr.shape[0]) != n_pub:  # grown further by a run that did not finish: back to the published length
        gw = store.open_group(url, storage_options, mode="r+", use_consolidated=False)
        for _name, arr in _time_dim_arrays(gw):
            shape = list(arr.shape)
            shape[list(_dims(arr)).index("time")] = n_pub
            arr.resize(tuple(shape))
    return n_pub, len(times)


def write_time_values(url: str, name: str, values: Any, start: int,
                      storage_options: Mapping[str, Any] | None = None) -> None:
    """Write datetimes into rows ``start..`` of a small array along ``time`` (e.g. ``time_bnds``)
    with the array's own CF units (for the rows :func:`extend_time` added)."""
    from xarray.coding.times import encode_cf_datetime

    g = store.open_group(url, storage_options, mode="r+", use_consolidated=False)
    arr = store.array(g, name)
    units = cast("str | None", arr.attrs.get("units"))
    calendar = cast("str", arr.attrs.get("calendar", "proleptic_gregorian"))
    vals = np.asarray(values, dtype="datetime64[ns]")
    num, _, _ = encode_cf_datetime(vals.reshape(-1), units, calendar, dtype=np.dtype(arr.dtype))
    arr[start:start + vals.shape[0]] = np.asarray(num, dtype=arr.dtype).reshape(vals.shape)


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
    old_idx = decode_index(old, n_chunks)
    new_idx = decode_index(new, n_chunks) if new is not None else np.full((n_chunks, 2), EMPTY, dtype="<u8")
    new_bytes = new if new is not None else b""  # None: every index entry is EMPTY, nothing is read
    body = bytearray(old[: len(old) - isz])
    out_idx = np.empty_like(new_idx)
    for i in range(n_chunks):
        off, nb = new_idx[i]
        if off == EMPTY and nb == EMPTY:
            out_idx[i] = (EMPTY, EMPTY)
            continue
        chunk = new_bytes[int(off): int(off) + int(nb)]
        ooff, onb = old_idx[i]
        if not (ooff == EMPTY and onb == EMPTY) and onb == nb and old[int(ooff): int(ooff) + int(onb)] == chunk:
            out_idx[i] = (ooff, onb)
        else:
            out_idx[i] = (len(body), nb)
            body += chunk
    return bytes(body) + encode_index(out_idx)


def _touched_keys(arr: zarr.Array[Any], sel: tuple[slice, ...], grid_shape: tuple[int, ...]) -> list[str]:
    """Storage keys of the objects (shards or chunks) that the selection ``sel`` touches."""
    bounds = [s.indices(n)[:2] for s, n in zip(sel, arr.shape)]
    ranges = [range(a // s, -(-b // s)) for (a, b), s in zip(bounds, grid_shape)]
    return [store.v3_metadata(arr).encode_chunk_key(tuple(r[i] for r, i in zip(ranges, c)))
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

    store.commit_check(url)  # fencing: refused once this run no longer holds the store's lock
    g = store.open_group(url, storage_options, mode="r", use_consolidated=False)
    fs, root = store.filesystem(url, storage_options)
    proto = default_buffer_prototype()
    written: dict[str, int] = {}
    for name, data in arrays.items():
        arr = store.array(g, name)
        sel = tuple(region.get(d, slice(None)) for d in _dims(arr))
        keys = [f"{name}/{k}" for k in _touched_keys(arr, sel, _grid_shape(arr))]
        codec = sharding_codec(arr)
        if codec is None:  # whole chunk objects: zarr's stores replace each one atomically
            store.array(store.open_group(url, storage_options, mode="r+", use_consolidated=False), name)[sel] = data
            written[name] = len(keys)
            continue
        if not index_layout_ok(codec):
            raise StoreError(url, f"array {name!r} has a shard index layout this writer does not handle.",
                             "use the master/monthly templates (index at the end, little endian + crc32c).")
        n_chunks = int(np.prod([s // c for s, c in zip(_grid_shape(arr), codec.chunk_shape)]))
        mem: dict[str, Any] = {f"{name}/zarr.json": proto.buffer.from_bytes(
            fs.cat_file(posixpath.join(root, name, "zarr.json")))}
        old: dict[str, bytes | None] = {}
        for key in keys:
            try:
                old[key] = raw = fs.cat_file(posixpath.join(root, key))
                mem[key] = proto.buffer.from_bytes(raw)
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


def append_days(url: str, new_times: Iterable[Any], blocks: Iterable[tuple[Mapping[str, slice], Mapping[str, np.ndarray]]],
                storage_options: Mapping[str, Any] | None = None, attrs: Mapping[str, Any] | None = None) -> int:
    """Append days to a published store in the safe order: extend (invisible) → write blocks → finalize.

    ``blocks``: (region, {array: packed data}) pairs, region indices in the *new* time axis, one per
    shard (a driver would submit them as tasks). Returns the new number of days.
    """
    n_old, n_new = extend_time(url, new_times, storage_options)
    for region, arrays in blocks:
        write_packed_preserving(url, region, arrays, storage_options)
    times = store.open_dataset(url, storage_options, consolidated=False)["time"].values
    store.finalize(url, storage_options, {**coverage_attrs(times), **dict(attrs or {})})
    log.info("store %s: published %d new days (%d in all)", url, n_new - n_old, n_new)
    return n_new
