"""Whole-shard writer for the master's packed int16 arrays.

zarr 3.1 encodes a shard's inner chunks one at a time on its event loop, with a thread hand-off
per inner chunk: for the master's (2, 60, 60) inner chunks that is ~0.5 ms of overhead per chunk
against ~0.08-0.15 ms of compression (a bench task's write: 115 ms through zarr, 37 ms here, of
which ~20 ms is blosc; see docs/performance.md). A downscale task always writes whole shards, so
it encodes each shard here in one pass and stores it with one ``set``: the same codecs (taken
from the array's metadata), the Zarr v3 ``sharding_indexed`` format (index of (offset, nbytes)
uint64 pairs at the end, crc32c), inner chunks in C order, all-fill inner chunks left out as zarr
does (``write_empty_chunks=False``). Anything else — other codecs, a region that is not whole
shards — goes through zarr itself. The index helpers here are shared with
:mod:`sm1km.storage.append` (prefix-preserving rewrites of published shards).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from sm1km.errors import StoreError

if TYPE_CHECKING:
    import zarr
    from zarr.codecs import BytesCodec, ShardingCodec

#: index entry of an inner chunk that is not stored (Zarr v3 sharding spec)
EMPTY = np.uint64(2**64 - 1)


@dataclasses.dataclass(frozen=True)
class ShardLayout:
    """What :func:`encode_shard` needs of an array: shard and inner shape, fill, inner codec."""

    shard: tuple[int, ...]
    inner: tuple[int, ...]
    fill: Any
    dtype: np.dtype[Any]
    compressor: Any  # numcodecs codec of the inner chunks' bytes
    write_empty_chunks: bool


def sharding_codec(arr: zarr.Array[Any]) -> ShardingCodec | None:
    """The array's ``sharding_indexed`` codec if it is its only array-to-bytes codec, else None."""
    from zarr.codecs import ShardingCodec

    codecs = getattr(arr.metadata, "codecs", None)
    return codecs[0] if codecs and len(codecs) == 1 and isinstance(codecs[0], ShardingCodec) else None


def _little_endian(codec: BytesCodec) -> bool:
    return str(getattr(codec.endian, "value", codec.endian)) == "little"


def index_layout_ok(codec: ShardingCodec) -> bool:
    """True for the shard index this module and :mod:`sm1km.storage.append` read and write: at the end,
    ``bytes`` (little endian) + ``crc32c``."""
    from zarr.codecs import BytesCodec, Crc32cCodec
    from zarr.codecs.sharding import ShardingCodecIndexLocation

    ic = list(codec.index_codecs)
    return (codec.index_location == ShardingCodecIndexLocation.end and len(ic) == 2
            and isinstance(ic[0], BytesCodec) and _little_endian(ic[0]) and isinstance(ic[1], Crc32cCodec))


def encode_index(index: np.ndarray) -> bytes:
    """Stored bytes of a shard index: (n_chunks, 2) uint64 little endian + its crc32c."""
    import google_crc32c

    raw = np.ascontiguousarray(index, dtype="<u8").tobytes()
    crc: int = google_crc32c.value(raw)
    return raw + crc.to_bytes(4, "little")


def decode_index(shard: bytes, n_chunks: int) -> np.ndarray:
    """(n_chunks, 2) uint64 offsets/lengths from the end of a shard (little endian + crc32c)."""
    import google_crc32c

    size = 16 * n_chunks + 4
    tail = shard[-size:]
    raw, crc = tail[:-4], int.from_bytes(tail[-4:], "little")
    if google_crc32c.value(raw) != crc:
        raise StoreError("shard", "the shard index checksum does not match.", "the object is corrupt; rewrite it.")
    return np.frombuffer(raw, dtype="<u8").reshape(n_chunks, 2).copy()


def layout_of(arr: zarr.Array[Any]) -> ShardLayout | None:
    """The layout of a zarr v3 array this module can encode, or None (then use zarr).

    Supported: one ``sharding_indexed`` codec whose inner codecs are ``bytes`` (little endian) +
    ``blosc``, with :func:`index_layout_ok`'s index.
    """
    import numcodecs
    from zarr.codecs import BloscCodec, BytesCodec
    from zarr.core.chunk_grids import RegularChunkGrid

    sc = sharding_codec(arr)
    if sc is None or not index_layout_ok(sc):
        return None
    meta = arr.metadata
    if not isinstance(meta.chunk_grid, RegularChunkGrid):  # zarr 3.1 writes no other grid
        return None
    inner = tuple(sc.codecs)
    dtype = np.dtype(arr.dtype)
    if len(inner) != 2 or not isinstance(inner[0], BytesCodec) or not isinstance(inner[1], BloscCodec):
        return None
    if not (_little_endian(inner[0]) or (dtype.itemsize == 1 and inner[0].endian is None)):
        return None
    if dtype.kind not in "iuf" or dtype.byteorder == ">":
        return None
    b = inner[1]
    shuffle = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}[b.shuffle.value]
    comp = numcodecs.Blosc(cname=b.cname.value, clevel=int(b.clevel), shuffle=shuffle,
                           blocksize=int(b.blocksize), typesize=int(b.typesize or dtype.itemsize))
    return ShardLayout(shard=tuple(meta.chunk_grid.chunk_shape), inner=tuple(sc.chunk_shape),
                       fill=meta.fill_value, dtype=dtype, compressor=comp,
                       write_empty_chunks=bool(arr.config.write_empty_chunks))


def encode_shard(block: np.ndarray, layout: ShardLayout) -> bytes | None:
    """The stored bytes of one shard holding ``block`` (≤ the shard shape at an array edge: the rest
    is fill), or None when every inner chunk is fill (zarr then stores no object)."""
    shard, inner = layout.shard, layout.inner
    if block.ndim != len(shard) or any(b > s for b, s in zip(block.shape, shard, strict=True)):
        raise ValueError(f"block {block.shape} does not fit in a shard {shard}")
    if any(s % i for s, i in zip(shard, inner, strict=True)):
        raise ValueError(f"shard {shard} is not a whole number of inner chunks {inner}")
    full = np.full(shard, layout.fill, dtype=layout.dtype)
    full[tuple(slice(0, n) for n in block.shape)] = block
    counts = tuple(s // i for s, i in zip(shard, inner, strict=True))
    nd = len(shard)
    # (n0, i0, n1, i1, ...) -> (n0, n1, ..., i0, i1, ...): each inner chunk one contiguous run
    split = full.reshape(tuple(x for pair in zip(counts, inner, strict=True) for x in pair))
    chunks = np.ascontiguousarray(split.transpose(tuple(range(0, 2 * nd, 2)) + tuple(range(1, 2 * nd, 2))))
    chunks = chunks.reshape(int(np.prod(counts)), int(np.prod(inner))).astype(layout.dtype.newbyteorder("<"),
                                                                              copy=False)
    if layout.write_empty_chunks:
        stored = np.ones(chunks.shape[0], dtype=bool)
    elif layout.dtype.kind == "f" and np.isnan(layout.fill):
        stored = ~np.isnan(chunks).all(axis=1)
    else:
        stored = ~(chunks == layout.fill).all(axis=1)
    if not stored.any():
        return None
    index = np.full((chunks.shape[0], 2), EMPTY, dtype="<u8")
    parts, offset = [], 0
    for k in np.flatnonzero(stored):
        enc = layout.compressor.encode(chunks[k])
        index[k] = (offset, len(enc))
        offset += len(enc)
        parts.append(enc)
    parts.append(encode_index(index))
    return b"".join(bytes(p) for p in parts)


def _whole_shards(bounds: Sequence[tuple[int, int, int]], shape: tuple[int, ...],
                  shard: tuple[int, ...]) -> list[range] | None:
    """Shard index ranges per dimension if ``bounds`` ((start, stop, step) per dimension) cover
    whole shards (clipped at the array's edge), else None."""
    ranges: list[range] = []
    for (start, stop, step), n, c in zip(bounds, shape, shard, strict=True):
        if step != 1 or start % c or not (stop % c == 0 or stop == n) or stop <= start:
            return None
        ranges.append(range(start // c, -(-stop // c)))
    return ranges


def inner_chunk_count(layout: ShardLayout) -> int:
    """Inner chunks per shard (= rows of the shard index)."""
    return int(np.prod([s // i for s, i in zip(layout.shard, layout.inner, strict=True)]))


def encode_whole_shards(arr: zarr.Array[Any], sel: tuple[slice, ...], data: np.ndarray
                        ) -> tuple[ShardLayout, Iterator[tuple[str, bytes | None]]] | None:
    """(layout, lazily encoded ``(storage key relative to the array, shard bytes or None)`` per
    shard) for ``data`` written into ``arr[sel]``, if ``sel`` is whole shards of a supported layout;
    None otherwise (then write through zarr). ``None`` bytes: every inner chunk is fill (zarr
    stores no object)."""
    import itertools

    layout = layout_of(arr)
    if layout is None or len(sel) != len(arr.shape) or not all(isinstance(s, slice) for s in sel):
        return None
    bounds = [s.indices(n) for s, n in zip(sel, arr.shape, strict=True)]
    ranges = _whole_shards(bounds, tuple(arr.shape), layout.shard)
    if ranges is None:
        return None
    data = np.asarray(data)
    starts = [b[0] for b in bounds]
    if data.shape != tuple(stop - start for start, stop, _ in bounds):
        raise ValueError(f"data {data.shape} does not match the selection {sel} of {arr.shape}")
    meta = arr.metadata

    def shards() -> Iterator[tuple[str, bytes | None]]:
        for coords in itertools.product(*ranges):
            lo = [c * s - st for c, s, st in zip(coords, layout.shard, starts, strict=True)]
            block = data[tuple(slice(a, a + s) for a, s in zip(lo, layout.shard, strict=True))]
            yield meta.encode_chunk_key(coords), encode_shard(block, layout)

    return layout, shards()


def write_whole_shards(arr: zarr.Array[Any], sel: tuple[slice, ...], data: np.ndarray) -> bool:
    """Write ``data`` into ``arr[sel]`` shard by shard if ``sel`` is whole shards of a supported
    layout; returns False (nothing written) otherwise, for the caller to use ``arr[sel] = data``."""
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    encoded = encode_whole_shards(arr, sel, data)
    if encoded is None:
        return False
    store, path = arr.store_path.store, arr.store_path.path
    proto = default_buffer_prototype()
    for key, enc in encoded[1]:
        key = f"{path}/{key}" if path else key
        if enc is None:
            sync(store.delete(key))
        else:
            sync(store.set(key, proto.buffer.from_bytes(enc)))
    return True
