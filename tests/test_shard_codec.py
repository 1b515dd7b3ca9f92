"""The whole-shard writer stores what zarr itself would store, and zarr reads it back exactly."""
import numpy as np
import pytest
import zarr

from sm1km.storage import master
from sm1km.storage.shard_codec import encode_shard, layout_of, write_whole_shards

FILL = -9999


def _array(shape=(37, 240, 250), shards=(16, 120, 120), chunks=(2, 60, 60), dtype="i2", fill=FILL,
           compressors="packed"):
    comp = [master.packed_compressor()] if compressors == "packed" else compressors
    return zarr.create_array(store={}, shape=shape, shards=shards, chunks=chunks, dtype=dtype, fill_value=fill,
                             compressors=comp, dimension_names=["time", "lat", "lon"])


def _objects(arr) -> dict[str, bytes]:
    d = arr.store._store_dict
    return {k: d[k].to_bytes() for k in d if k.startswith("c/")}


def _data(shape=(37, 240, 250), seed=0):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 600, shape).astype("i2")
    data[:, :60, :60] = FILL          # all-fill inner chunks in every shard row 0 col 0
    data[:, 120:, 240:] = FILL        # one whole edge shard column is fill -> no object there
    return data


def test_whole_array_matches_zarr_objects_and_values():
    data = _data()
    ours, ref = _array(), _array()
    ref[:] = data
    assert write_whole_shards(ours, (slice(None),) * 3, data)
    np.testing.assert_array_equal(ours[:], data)
    a, b = _objects(ours), _objects(ref)
    assert sorted(a) == sorted(b)  # same shards stored, the all-fill ones left out by both
    assert "c/0/1/2" not in a      # lat 120:240, lon 240:250 is all fill
    for k in a:                    # same compressed inner chunks and index, in another order
        assert len(a[k]) == len(b[k]), k


def test_region_of_whole_shards_with_edge_and_reopen():
    data = _data()
    arr = _array()
    sel = (slice(32, 37), slice(120, 240), slice(0, 240))  # last (partial) time block, 2 shards
    assert write_whole_shards(arr, sel, data[sel])
    back = zarr.open_array(arr.store, mode="r")[:]
    np.testing.assert_array_equal(back[sel], data[sel])
    untouched = np.ones(back.shape, bool)
    untouched[sel] = False
    assert (back[untouched] == FILL).all()


def test_all_fill_overwrite_deletes_the_shard():
    data = _data()
    arr = _array()
    sel = (slice(0, 16), slice(0, 120), slice(0, 120))
    assert write_whole_shards(arr, sel, data[sel])
    assert "c/0/0/0" in _objects(arr)
    assert write_whole_shards(arr, sel, np.full((16, 120, 120), FILL, "i2"))
    assert "c/0/0/0" not in _objects(arr)
    assert (arr[sel] == FILL).all()


@pytest.mark.parametrize("sel", [
    (slice(0, 8), slice(None), slice(None)),            # half a time block
    (slice(None), slice(60, 180), slice(None)),          # straddles shards
    (slice(None), slice(None), slice(0, 245)),           # stops short of the edge
])
def test_not_whole_shards_writes_nothing(sel):
    arr = _array()
    data = _data()
    assert not write_whole_shards(arr, sel, data[sel])
    assert _objects(arr) == {}


def test_unsupported_layouts_fall_back():
    from zarr.codecs import ZstdCodec

    unsharded = zarr.create_array(store={}, shape=(4, 60, 60), chunks=(2, 60, 60), dtype="i2", fill_value=FILL)
    assert layout_of(unsharded) is None
    other = _array(compressors=[ZstdCodec(level=3)])
    assert layout_of(other) is None
    assert not write_whole_shards(other, (slice(None),) * 3, _data())


def test_float_nan_fill_and_master_layout():
    arr = _array(shape=(4, 120, 120), shards=(4, 120, 120), dtype="f4", fill=np.nan,
                 compressors=[zarr.codecs.BloscCodec(typesize=4, cname="zstd", clevel=3, shuffle="shuffle")])
    data = np.random.default_rng(3).random((4, 120, 120)).astype("f4")
    data[:, :60] = np.nan
    assert write_whole_shards(arr, (slice(None),) * 3, data)
    np.testing.assert_array_equal(arr[:], data)
    lay = layout_of(arr)
    assert encode_shard(np.full((4, 120, 120), np.nan, "f4"), lay) is None


def test_encode_shard_rejects_a_block_larger_than_the_shard():
    lay = layout_of(_array())
    with pytest.raises(ValueError, match="does not fit"):
        encode_shard(np.zeros((17, 120, 120), "i2"), lay)


def test_corrupt_index_is_detected_by_zarr():
    """The crc32c of the index is real: flipping one index byte makes zarr refuse the shard."""
    data = _data()
    arr = _array()
    sel = (slice(0, 16), slice(0, 120), slice(120, 240))
    assert write_whole_shards(arr, sel, data[sel])
    d = arr.store._store_dict
    raw = bytearray(d["c/0/0/1"].to_bytes())
    raw[-10] ^= 0xFF
    d["c/0/0/1"] = type(d["c/0/0/1"]).from_bytes(bytes(raw))
    with pytest.raises(ValueError, match="checksum"):
        arr[sel]
