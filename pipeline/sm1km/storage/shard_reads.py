"""Concurrent, coalesced reads of the inner chunks of a shard — the reader setting that makes a
21-year point series over HTTP take seconds instead of half a minute.

zarr-python up to 3.1.x reads the inner chunks a selection needs *from one shard* one after the
other (the loop in ``ShardingCodec._decode_partial_single``): a point series of the 1 km master
(128-day shards of 2-day inner chunks) makes 64 range requests per shard **in sequence**, ~3,900
for 21 years, ≈ 30 s at 20 ms per request, whatever ``async.concurrency`` says (shards are
fetched concurrently, their chunks are not). zarr-python fixed this upstream (PR #3004: nearby
chunks coalesced into one request, the requests of a shard fetched concurrently); this module
does the same for the zarr this package runs with, and steps aside where zarr does it itself.

>>> from sm1km.storage.shard_reads import concurrent_shard_reads
>>> with concurrent_shard_reads():                      # or enable_concurrent_shard_reads() once
...     series = xr.open_zarr(url, chunks=None).sm.sel(lat=45.8, lon=11.2, method="nearest").load()

Settings: ``max_gap_bytes`` — two needed chunks of a shard less than this many bytes apart are
fetched in one range request (the bytes between them read and dropped); ``max_request_bytes`` —
no coalesced request grows beyond this; ``concurrency`` — range requests of one shard in flight
at once (zarr's own ``async.concurrency`` still bounds the shards in flight: up to the product).
Measured numbers (requests, bytes, seconds at 20 ms latency) are in ``docs/reading.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

#: defaults: point series of the master at 20 ms latency (docs/reading.md, "Fast point series")
MAX_GAP_BYTES = 1 << 16
MAX_REQUEST_BYTES = 8 << 20
CONCURRENCY = 32


@dataclass(frozen=True)
class Settings:
    max_gap_bytes: int = MAX_GAP_BYTES
    max_request_bytes: int = MAX_REQUEST_BYTES
    concurrency: int = CONCURRENCY


_settings: list[Settings] = []
_original: Any = None


def coalesce(slices: list[tuple[int, int, Any]], max_gap: int,
             max_size: int) -> list[tuple[int, int, list[tuple[int, int, Any]]]]:
    """Group byte ranges ``(start, stop, tag)`` into requests ``(start, stop, members)``: sorted by
    start, a range joins the previous request when the gap to it is below ``max_gap`` bytes and the
    request stays within ``max_size`` bytes. Pure; each member keeps its own ``(start, stop, tag)``."""
    out: list[tuple[int, int, list[tuple[int, int, Any]]]] = []
    for a, b, tag in sorted(slices, key=lambda s: (s[0], s[1])):
        if out and a - out[-1][1] < max_gap and max(b, out[-1][1]) - out[-1][0] <= max_size:
            s0, s1, members = out[-1]
            members.append((a, b, tag))
            out[-1] = (s0, max(s1, b), members)
        else:
            out.append((a, b, [(a, b, tag)]))
    return out


def upstream_coalesces() -> bool:
    """Does the installed zarr read a shard's chunks concurrently itself (zarr-python PR #3004)?"""
    from zarr.codecs.sharding import ShardingCodec

    src = inspect.getsource(ShardingCodec._decode_partial_single)
    return "for chunk_coords in all_chunk_coords:" not in src or "coalesce" in src


async def _read_chunks(byte_getter: Any, shard_index: Any, all_chunk_coords: Any, prototype: Any,
                       settings: Settings) -> dict[Any, Any]:
    from zarr.abc.store import RangeByteRequest

    slices = []
    for coords in all_chunk_coords:
        s = shard_index.get_chunk_slice(coords)
        if s:
            slices.append((int(s[0]), int(s[1]), coords))
    groups = coalesce(slices, settings.max_gap_bytes, settings.max_request_bytes)
    gate = asyncio.Semaphore(max(1, settings.concurrency))

    async def fetch(group: tuple[int, int, list[Any]]) -> tuple[tuple[int, int, list[Any]], Any]:
        async with gate:
            return group, await byte_getter.get(prototype=prototype, byte_range=RangeByteRequest(group[0], group[1]))

    out: dict[Any, Any] = {}
    for (start, _stop, members), buf in await asyncio.gather(*(fetch(g) for g in groups)):
        if buf is None:
            continue
        for a, b, coords in members:
            out[coords] = buf[a - start:b - start]
    return out


def _make_patched(original: Any) -> Any:
    async def _decode_partial_single(self: Any, byte_getter: Any, selection: Any, shard_spec: Any) -> Any:
        from zarr.core.chunk_grids import RegularChunkGrid
        from zarr.core.indexing import get_indexer

        settings = _settings[-1] if _settings else None
        if settings is None:
            return await original(self, byte_getter, selection, shard_spec)
        chunks_per_shard = self._get_chunks_per_shard(shard_spec)
        chunk_spec = self._get_chunk_spec(shard_spec)
        indexer = get_indexer(selection, shape=shard_spec.shape, chunk_grid=RegularChunkGrid(chunk_shape=self.chunk_shape))
        indexed = list(indexer)
        all_chunk_coords = {c for c, *_ in indexed}
        if self._is_total_shard(all_chunk_coords, chunks_per_shard):
            return await original(self, byte_getter, selection, shard_spec)  # one GET of the shard
        out = shard_spec.prototype.nd_buffer.empty(shape=indexer.shape, dtype=shard_spec.dtype.to_native_dtype(),
                                                   order=shard_spec.order)
        shard_index = await self._load_shard_index_maybe(byte_getter, chunks_per_shard)
        if shard_index is None:
            return None
        shard_dict = await _read_chunks(byte_getter, shard_index, all_chunk_coords, chunk_spec.prototype,
                                        settings)
        from zarr.codecs.sharding import _ShardingByteGetter

        await self.codec_pipeline.read(
            [(_ShardingByteGetter(shard_dict, coords), chunk_spec, chunk_sel, out_sel, complete)
             for coords, chunk_sel, out_sel, complete in indexed], out)
        if hasattr(indexer, "sel_shape"):
            return out.reshape(indexer.sel_shape)
        return out

    _decode_partial_single.__sm1km_patched__ = True  # type: ignore[attr-defined]
    return _decode_partial_single


def _install() -> bool:
    """Patch the installed zarr's partial shard read (once); False where zarr needs no patch."""
    global _original
    from zarr.codecs.sharding import ShardingCodec

    if getattr(ShardingCodec._decode_partial_single, "__sm1km_patched__", False):
        return True
    if upstream_coalesces():
        return False
    _original = ShardingCodec._decode_partial_single
    ShardingCodec._decode_partial_single = _make_patched(_original)  # type: ignore[method-assign]
    return True


@contextlib.contextmanager
def concurrent_shard_reads(max_gap_bytes: int = MAX_GAP_BYTES, max_request_bytes: int = MAX_REQUEST_BYTES,
                           concurrency: int = CONCURRENCY) -> Iterator[bool]:
    """Inside the block, zarr reads the chunks a selection needs from a shard concurrently,
    nearby ones coalesced (module docstring). Yields whether this module does it (False: the
    installed zarr does it itself, and its own settings apply)."""
    active = _install()
    _settings.append(Settings(max_gap_bytes, max_request_bytes, concurrency))
    try:
        yield active
    finally:
        _settings.pop()


def enable_concurrent_shard_reads(max_gap_bytes: int = MAX_GAP_BYTES, max_request_bytes: int = MAX_REQUEST_BYTES,
                                  concurrency: int = CONCURRENCY) -> bool:
    """:func:`concurrent_shard_reads` for the rest of the process (a notebook's first cell)."""
    active = _install()
    _settings.append(Settings(max_gap_bytes, max_request_bytes, concurrency))
    return active


__all__ = ["concurrent_shard_reads", "enable_concurrent_shard_reads", "coalesce", "upstream_coalesces",
           "MAX_GAP_BYTES", "MAX_REQUEST_BYTES", "CONCURRENCY"]
