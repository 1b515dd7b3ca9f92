"""Store layer conformance: the same tests on a local path and on S3 (moto server)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from sm1km.errors import StoreError
from sm1km.storage import store


def _template(nt=8, ny=6, nx=4):
    time = pd.date_range("2020-01-01", periods=nt, freq="D")
    data = xr.DataArray(np.zeros((nt, ny, nx), "float32"), dims=("time", "lat", "lon")).chunk({"time": 4, "lat": 3, "lon": 4})
    ds = xr.Dataset({"sm": data}, coords={"time": time, "lat": np.linspace(10, 5, ny), "lon": np.arange(nx, dtype=float)})
    return ds


def test_template_region_writes_ledger_consolidate(store_root):
    root, so = store_root
    url = store.join(root, "cube.zarr")
    tpl = _template()
    assert store.create_template(url, tpl, {"sm": {"chunks": (4, 3, 4)}}, so) is True
    assert store.exists(url, so)
    # second template call with the same layout resumes
    assert store.create_template(url, tpl, {"sm": {"chunks": (4, 3, 4)}}, so) is False
    ledger = store.Ledger(root, "cube.zarr", so)
    rng = np.random.default_rng(0)
    full = rng.random((8, 6, 4)).astype("float32")
    for t0 in (0, 4):
        for y0 in (0, 3):
            reg = {"time": slice(t0, t0 + 4), "lat": slice(y0, y0 + 3)}
            key = store.region_key(**reg)
            assert not ledger.done(key)
            blk = tpl.isel(reg).copy(data=None)
            blk["sm"] = (("time", "lat", "lon"), full[t0:t0 + 4, y0:y0 + 3])
            store.write_region(url, blk, reg, so)
            ledger.mark(key, {"n": 1})
            assert ledger.done(key)
    assert len(ledger.keys()) == 4
    store.finalize(url, so, store.coverage_attrs(tpl.time.values))
    back = store.open_dataset(url, so, consolidated=True)
    np.testing.assert_array_equal(back.sm.values, full)
    assert back.attrs["time_coverage_start"] == "2020-01-01"
    assert back.attrs["time_coverage_end"] == "2020-01-08"


def test_layout_mismatch_is_a_store_error(store_root):
    root, so = store_root
    url = store.join(root, "cube.zarr")
    store.create_template(url, _template(), None, so)
    with pytest.raises(StoreError, match="different layout"):
        store.create_template(url, _template(nt=9), None, so)


def test_missing_store_is_a_store_error(store_root):
    root, so = store_root
    with pytest.raises(StoreError, match="no Zarr store"):
        store.open_dataset(store.join(root, "absent.zarr"), so)


def test_checksum_tree_detects_change(store_root):
    root, so = store_root
    url = store.join(root, "cube.zarr")
    store.create_template(url, _template(), None, so)
    a = store.checksum_tree(url, so)
    assert a and "zarr.json" in a
    store.update_attrs(url, {"x": 1}, so)
    b = store.checksum_tree(url, so)
    assert a != b


def test_source_date_epoch_fixes_timestamps(monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    assert store.now_iso() == "2023-11-14T22:13:20Z"


def test_errors_pickle_roundtrip():
    import pickle

    from sm1km.errors import InputError

    e = pickle.loads(pickle.dumps(InputError("a.nc", "truncated.", "download it again.")))
    assert isinstance(e, InputError) and e.where == "a.nc" and "download it again." in str(e)


def test_int16_encoding_unwritten_chunks_read_as_nan(tmp_path):
    url = str(tmp_path / "p.zarr")
    tpl = _template()
    store.create_template(url, tpl, {"sm": store.cf_int16_encoding(chunks=(4, 3, 4))})
    back = store.open_dataset(url)
    assert back.sm.dtype.kind == "f" and np.isnan(back.sm.values).all()


# --------------------------------------------------------------------------------------------
# the one atomic put and the one JSON read/write
# --------------------------------------------------------------------------------------------
def _objects(root, so) -> list[str]:
    fs, path = store.filesystem(root, so)
    fs.invalidate_cache()
    return sorted(p[len(path.rstrip("/")) + 1:] for p in fs.find(path))


def test_put_atomic_replaces_whole_object_and_leaves_no_temporary(store_root):
    root, so = store_root
    url = store.join(root, "a", "b.bin")
    store.put_atomic(url, b"old", so)
    store.put_atomic(url, b"new bytes", so)
    fs, path = store.filesystem(url, so)
    assert fs.cat_file(path) == b"new bytes"
    assert _objects(root, so) == ["a/b.bin"]


@pytest.mark.parametrize("layout,expected", [
    ({}, b'{"a": [1, 2], "b": {"c": null}}'),                                 # ledger markers
    ({"separators": (",", ":")}, b'{"a":[1,2],"b":{"c":null}}'),              # ingest index
    ({"indent": 1}, b'{\n "a": [\n  1,\n  2\n ],\n "b": {\n  "c": null\n }\n}'),  # published.json
    ({"indent": 2, "newline": True, "allow_nan": False},
     b'{\n  "a": [\n    1,\n    2\n  ],\n  "b": {\n    "c": null\n  }\n}\n'),  # metrics.json, model card
])
def test_json_bytes_layouts(layout, expected):
    assert store.json_bytes({"b": {"c": None}, "a": [1, 2]}, **layout) == expected


def test_json_bytes_refuses_nan_where_asked():
    assert store.json_bytes({"x": float("nan")}) == b'{"x": NaN}'
    with pytest.raises(ValueError):
        store.json_bytes({"x": float("nan")}, allow_nan=False)


def test_read_write_json(store_root):
    root, so = store_root
    url = store.join(root, "report", "doc.json")
    assert store.read_json(url, so) is None
    store.write_json(url, {"z": 1, "a": "ü"}, so, indent=1)
    fs, path = store.filesystem(url, so)
    assert fs.cat_file(path) == b'{\n "a": "\\u00fc",\n "z": 1\n}'
    assert store.read_json(url, so) == {"a": "ü", "z": 1}
    store.put_atomic(url, b"{not json", so)
    with pytest.raises(ValueError):
        store.read_json(url, so)
    assert _objects(root, so) == ["report/doc.json"]


def test_ledger_marks_and_info(store_root):
    root, so = store_root
    led = store.Ledger(root, "cube.zarr", so)
    assert led.info("k") is None and not led.done("k")
    led.mark("k", {"n": 3, "a": 1})
    assert led.done("k") and led.info("k") == {"a": 1, "n": 3} and led.keys() == {"k"}
    fs, path = store.filesystem(store.join(root, "_ledger", "cube.zarr", "k.json"), so)
    assert fs.cat_file(path) == b'{"a": 1, "n": 3}'
    assert _objects(root, so) == ["_ledger/cube.zarr/k.json"]


def test_open_group_reads_own_metadata_without_consolidated(store_root):
    root, so = store_root
    url = store.join(root, "cube.zarr")
    store.create_template(url, _template(), None, so)
    store.finalize(url, so)
    store.open_group(url, so, mode="r+", use_consolidated=False)["sm"].resize((12, 6, 4))
    assert store.open_group(url, so)["sm"].shape == (8, 6, 4)  # what readers see: the consolidated copy
    assert store.open_group(url, so, use_consolidated=False)["sm"].shape == (12, 6, 4)
