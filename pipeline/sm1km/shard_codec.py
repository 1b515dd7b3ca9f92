"""Whole-shard writer for the master's packed int16 arrays.

zarr 3.1 encodes a shard's inner chunks one at a time on its event loop, with a thread hand-off
per inner chunk: for the master's (2, 60, 60) inner chunks that is ~0.5 ms of overhead per chunk
against ~0.08-0.15 ms of compression (a bench task's write: 115 ms through zarr, 37 ms here, of
which ~20 ms is blosc; see docs/performance.md). A downscale task always writes whole shards, so
it encodes each shard here in one pass and stores it with one ``set``: the same codecs (taken
from the array's metadata), the
Zarr v3 ``sharding_indexed`` format (index of (offset, nbytes) uint64 pairs at the end, crc32c),
inner chunks in C order, all-fill inner chunks left out as zarr does (``write_empty_chunks=False``).
Anything else — other codecs, a region that is not whole shards — goes through zarr itself.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

#: index entry of an inner chunk that is not stored (Zarr v3 sharding spec)
EMPTY = np.uint64(2**64 - 1)


@dataclasses.dataclass(frozen=True)
class ShardLayout:
    """What :func:`encode_shard` needs of an array: shard and inner shape, fill, inner codec."""

    shard: tuple[int, ...]
    inner: tuple[int, ...]
    fill: Any
    dtype: np.dtype
    compressor: Any  # numcodecs codec of the inner chunks' bytes
    write_empty_chunks: bool


def layout_of(arr) -> ShardLayout | None:
    """The layout of a zarr v3 array this module can encode, or None (then use zarr).

    Supported: one ``sharding_indexed`` codec whose inner codecs are ``bytes`` (little endian) +
    ``blosc``, whose index codecs are ``bytes`` (little endian) + ``crc32c``, index at the end.
    """
    import numcodecs
    from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, ShardingCodec
    from zarr.codecs.sharding import ShardingCodecIndexLocation

    meta = arr.metadata
    codecs = getattr(meta, "codecs", None)
    if not codecs or len(codecs) != 1 or not isinstance(codecs[0], ShardingCodec):
        return None
    sc = codecs[0]
    inner, index = tuple(sc.codecs), tuple(sc.index_codecs)
    dtype = np.dtype(arr.dtype)
    little = ("little", None) if dtype.itemsize == 1 else ("little",)

    def _is_bytes(c):
        return isinstance(c, BytesCodec) and (c.endian.value if c.endian is not None else None) in little

    if len(inner) != 2 or not _is_bytes(inner[0]) or not isinstance(inner[1], BloscCodec):
        return None
    if len(index) != 2 or not isinstance(index[0], BytesCodec) or index[0].endian.value != "little" \
            or not isinstance(index[1], Crc32cCodec) or sc.index_location != ShardingCodecIndexLocation.end:
        return None
    if dtype.kind not in "iuf" or np.dtype(dtype).byteorder == ">":
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
    import google_crc32c

    shard, inner = layout.shard, layout.inner
    if block.ndim != len(shard) or any(b > s for b, s in zip(block.shape, shard)):
        raise ValueError(f"block {block.shape} does not fit in a shard {shard}")
    if any(s % i for s, i in zip(shard, inner)):
        raise ValueError(f"shard {shard} is not a whole number of inner chunks {inner}")
    full = np.full(shard, layout.fill, dtype=layout.dtype)
    full[tuple(slice(0, n) for n in block.shape)] = block
    counts = tuple(s // i for s, i in zip(shard, inner))
    nd = len(shard)
    # (n0, i0, n1, i1, ...) -> (n0, n1, ..., i0, i1, ...): each inner chunk one contiguous run
    split = full.reshape(tuple(x for pair in zip(counts, inner) for x in pair))
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
    index_bytes = index.tobytes()
    parts.append(index_bytes)
    parts.append(np.uint32(google_crc32c.value(index_bytes)).astype("<u4").tobytes())
    return b"".join(bytes(p) for p in parts)


def _whole_shards(sel: tuple[slice, ...], shape: tuple[int, ...], shard: tuple[int, ...]):
    """Shard index ranges per dimension if ``sel`` covers whole shards (clipped at the edge), else None."""
    ranges = []
    for s, n, c in zip(sel, shape, shard):
        start, stop, step = s.indices(n)
        if step != 1 or start % c or not (stop % c == 0 or stop == n) or stop <= start:
            return None
        ranges.append(range(start // c, -(-stop // c)))
    return ranges


def write_whole_shards(arr, sel: tuple[slice, ...], data: np.ndarray) -> bool:
    """Write ``data`` into ``arr[sel]`` shard by shard if ``sel`` is whole shards of a supported
    layout; returns False (nothing written) otherwise, for the caller to use ``arr[sel] = data``."""
    import itertools

    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    layout = layout_of(arr)
    if layout is None or len(sel) != len(arr.shape) or not all(isinstance(s, slice) for s in sel):
        return False
    ranges = _whole_shards(sel, tuple(arr.shape), layout.shard)
    if ranges is None:
        return False
    data = np.asarray(data)
    starts = [s.indices(n)[0] for s, n in zip(sel, arr.shape)]
    if data.shape != tuple(s.indices(n)[1] - s.indices(n)[0] for s, n in zip(sel, arr.shape)):
        raise ValueError(f"data {data.shape} does not match the selection {sel} of {arr.shape}")
    store, path = arr.store_path.store, arr.store_path.path
    proto = default_buffer_prototype()
    meta = arr.metadata
    for coords in itertools.product(*ranges):
        lo = [c * s - st for c, s, st in zip(coords, layout.shard, starts)]
        block = data[tuple(slice(a, a + s) for a, s in zip(lo, layout.shard))]
        enc = encode_shard(block, layout)
        key = meta.encode_chunk_key(coords)
        key = f"{path}/{key}" if path else key
        if enc is None:
            sync(store.delete(key))
        else:
            sync(store.set(key, proto.buffer.from_bytes(enc)))
    return True
