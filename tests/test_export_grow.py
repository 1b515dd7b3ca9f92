"""Export grows with the master: to day N then grown to N+k equals a one-shot export; files of
closed time blocks are left alone (same bytes, not rewritten), the open month's HDF5 and the files
of a grown or revised block are rewritten; a second export is a no-op; files written before the
manifest (a killed run) are adopted by their embedded digest. Local and S3 (moto)."""

from __future__ import annotations

import posixpath

import h5py
import numpy as np
import rasterio

import export_stores as es
from sm1km.pipeline import export_deliverables
from sm1km.stages.export import export
from sm1km.stages.export.manifest import DEPS_ATTR, MANIFEST, embedded_deps, read_manifest
from sm1km.storage import store
from sm1km.storage.deps import BlockDigests
from sm1km.testing.worlds import fixed_timestamps

START, END = "2019-12-29", "2020-01-12"   # 15 days, time blocks of 4: Dec29-Jan1 | Jan2-5 | Jan6-9 | Jan10-12
N0 = 6                                    # first state: to Jan 3 (block 0 closed, block 1 partial)


def _world(root, so):
    cfg = es.run_config(root, so, start=START, end=END)
    full = es.make_master(cfg, so)  # the whole period (the one-shot master), then cut to N0 days
    return cfg, full


def _write_master(cfg, so, q, n):
    es.write_store(cfg.store.url("master.zarr"), so, cfg, {k: v[:n] for k, v in q.items()}, cfg.dates()[:n])


def _objects(url, so):
    """{name: bytes} of every file directly under an export folder."""
    fs, path = store.filesystem(url, so)
    fs.invalidate_cache()
    return {posixpath.basename(p): fs.cat_file(p) for p in fs.find(path)}


def _stamps(url, so):
    fs, path = store.filesystem(url, so)
    fs.invalidate_cache()
    return {posixpath.basename(p): (i.get("mtime") or i.get("LastModified"), i.get("ino"))
            for p, i in fs.find(path, detail=True).items()}


def _decoded(name, payload, tmp_path):
    p = tmp_path / ("x_" + name)
    p.write_bytes(payload)
    if name.endswith(".tif"):
        with rasterio.open(p) as ds:
            return ds.read()
    with h5py.File(p) as f:
        return {k: f[k][...] for k in ("time", "lat", "lon", "sm")}


def _assert_same_decoded(a, b, tmp_path):
    assert sorted(a) == sorted(b)
    for name in a:
        if name == MANIFEST:
            continue
        da, db = _decoded(name, a[name], tmp_path), _decoded(name, b[name], tmp_path)
        if isinstance(da, dict):
            for k in da:
                np.testing.assert_array_equal(da[k], db[k], err_msg=f"{name}/{k}")
        else:
            np.testing.assert_array_equal(da, db, err_msg=name)


def test_grown_export_equals_one_shot_and_closed_files_stay(store_root, tmp_path):
    root, so = store_root
    cfg, q = _world(root, so)
    out = cfg.store.url("exports")
    with fixed_timestamps():
        # one shot over the whole master, elsewhere
        one = export_deliverables(cfg)
        one_shot = {f: _objects(store.join(out, f), so) for f in ("geotiff", "hdf5")}
        fs, path = store.filesystem(out, so)
        fs.rm(path, recursive=True)
        # day N0, then grown by 9 days
        _write_master(cfg, so, q, N0)
        first = export_deliverables(cfg)
        assert first.stats["units_total"] == N0 + 2 and first.stats["units_written"] == N0 + 2
        before = {f: _objects(store.join(out, f), so) for f in ("geotiff", "hdf5")}
        stamps = {f: _stamps(store.join(out, f), so) for f in ("geotiff", "hdf5")}
        _write_master(cfg, so, q, len(q["sm"]))
        grown = export_deliverables(cfg)
    after = {f: _objects(store.join(out, f), so) for f in ("geotiff", "hdf5")}
    # the same file set and decoded arrays as the one-shot export
    for f in ("geotiff", "hdf5"):
        _assert_same_decoded(after[f], one_shot[f], tmp_path)
    assert grown["geotiff"] == one["geotiff"] and grown["hdf5"] == one["hdf5"]
    # closed block (Dec 29 - Jan 1): its daily files and the December HDF5 are left as they were
    closed = [f"sm1km_daily_{d}.tif" for d in ("20191229", "20191230", "20191231", "20200101")]
    for name in closed:
        assert after["geotiff"][name] == before["geotiff"][name], name
        assert _stamps(store.join(out, "geotiff"), so)[name] == stamps["geotiff"][name], f"{name} rewritten"
    assert after["hdf5"]["sm1km_daily_201912.h5"] == before["hdf5"]["sm1km_daily_201912.h5"]
    assert _stamps(store.join(out, "hdf5"), so)["sm1km_daily_201912.h5"] == stamps["hdf5"]["sm1km_daily_201912.h5"]
    # the open month's HDF5 is rewritten (6 days -> 12 days); the partial block's 2 days rewritten, 9 new
    assert after["hdf5"]["sm1km_daily_202001.h5"] != before["hdf5"]["sm1km_daily_202001.h5"]
    assert grown.stats["units_written"] == 2 + 9 + 1 and grown.stats["units_rewritten"] == 2 + 1
    assert grown.stats["units_skipped"] == 4 + 1
    man = read_manifest(store.join(out, "hdf5"), so)
    assert man["sm1km_daily_202001.h5"]["time_coverage_end"] == "2020-01-12"
    assert man["sm1km_daily_202001.h5"]["n_days"] == 12
    # a second export is a no-op: nothing written, the manifest untouched
    stamps2 = {f: _stamps(store.join(out, f), so) for f in ("geotiff", "hdf5")}
    again = export_deliverables(cfg)
    assert again.stats["units_written"] == 0 and again.stats["tasks"] == 0
    assert {f: _stamps(store.join(out, f), so) for f in ("geotiff", "hdf5")} == stamps2


def test_a_revised_block_rewrites_exactly_its_files(store_root, tmp_path):
    root, so = store_root
    cfg, q = _world(root, so)
    out = store.join(root, "exports", "geotiff")
    export(cfg, out=out)
    q2 = {k: v.copy() for k, v in q.items()}
    q2["sm"][5] = np.where(q2["sm"][5] == es.FILL, es.FILL, q2["sm"][5] // 2)  # Jan 3 revised (block Jan 2-5)
    _write_master(cfg, so, q2, len(q2["sm"]))
    res = export(cfg, out=out)
    assert res.stats["units_written"] == res.stats["units_rewritten"] == 4  # the 4 days of that block
    with rasterio.open(es.local_copy(store.join(out, "sm1km_daily_20200103.tif"), so, tmp_path)) as ds:
        np.testing.assert_array_equal(ds.read(1), q2["sm"][5])


def test_recorded_block_digests_drive_the_export(tmp_path):
    root = str(tmp_path / "store")
    cfg, q = _world(root, {})
    blocks = BlockDigests(root, "master.zarr")
    blocks.record({"time-0-4": "a", "time-4-8": "b", "time-8-12": "c", "time-12-16": "d"})
    out = str(tmp_path / "tif")
    assert export(cfg, out=out).stats["units_written"] == 15
    # the record is what counts: the master's bytes change without a new record -> nothing to do
    q2 = {k: v.copy() for k, v in q.items()}
    q2["sm"][:] = 7
    _write_master(cfg, {}, q2, len(q2["sm"]))
    assert export(cfg, out=out).stats["units_written"] == 0
    # block 2 (Jan 6-9) recorded with another digest: its 4 files are rewritten
    blocks.record({"time-8-12": "c2"})
    res = export(cfg, out=out)
    assert res.stats["units_rewritten"] == 4
    assert sorted(posixpath.basename(u) for u in res["files"])[8:12] == [
        f"sm1km_daily_202001{d:02d}.tif" for d in (6, 7, 8, 9)]


def test_files_without_a_manifest_entry_are_adopted_or_rewritten(store_root, tmp_path):
    root, so = store_root
    cfg, _ = _world(root, so)
    out = store.join(root, "exports", "h5")
    first = export(cfg, fmt="hdf5", out=out)
    fs, path = store.filesystem(out, so)
    man = fs.cat_file(posixpath.join(path, MANIFEST))
    # a killed run: the files written, the manifest not yet -> adopted by the digest in each file
    fs.rm(posixpath.join(path, MANIFEST))
    res = export(cfg, fmt="hdf5", out=out)
    assert res.stats["units_adopted"] == 2 and res.stats["units_written"] == 0
    assert fs.cat_file(posixpath.join(path, MANIFEST)) == man
    for u in first["files"]:
        assert embedded_deps(u, so) == read_manifest(out, so)[posixpath.basename(u)]["deps"]
    # a file of another origin under the name (no digest) and no entry: rewritten
    fs.rm(posixpath.join(path, MANIFEST))
    fs.pipe_file(posixpath.join(path, "sm1km_daily_202001.h5"), b"not an HDF5 file")
    res = export(cfg, fmt="hdf5", out=out)
    assert res.stats["units_rewritten"] == 1 and res.stats["units_adopted"] == 1
    with h5py.File(es.local_copy(store.join(out, "sm1km_daily_202001.h5"), so, tmp_path)) as f:
        assert f.attrs[DEPS_ATTR] and f["sm"].shape[0] == 12


def _catalog_docs(cfg, so):
    import json

    coll_url = cfg.store.url("catalog", "collection.json")
    fs, path = store.filesystem(coll_url, so)
    fs.invalidate_cache()
    coll = json.loads(fs.cat_file(path))
    items = {}
    for link in coll["links"]:
        if link["rel"] == "item":
            d = json.loads(fs.cat_file(posixpath.normpath(posixpath.join(posixpath.dirname(path), link["href"]))))
            items[d["id"]] = d
    return coll, items


def test_catalog_grows_with_the_exports(store_root):
    from sm1km.stages.catalog import catalog

    root, so = store_root
    cfg, q = _world(root, so)
    with fixed_timestamps():
        _write_master(cfg, so, q, N0)
        export_deliverables(cfg)
        first = catalog(cfg)
        coll, items = _catalog_docs(cfg, so)
        assert first.stats["items"] == len(items) == 1 + N0 + 2  # master + 6 days + 2 months
        assert coll["extent"]["temporal"]["interval"][0][1] == "2020-01-03T23:59:59Z"
        jan = items["hdf5-sm1km_daily_202001"]
        assert jan["properties"]["end_datetime"] == "2020-01-03T23:59:59Z"  # the days it holds, not the month
        # every item's file is there (the catalog is written after the exports)
        for it in items.values():
            for a in it["assets"].values():
                if a["href"].endswith((".tif", ".h5")):
                    fs, p = store.filesystem(store.join(cfg.store.url("catalog"), it["id"], a["href"]), so)
                    assert fs.exists(posixpath.normpath(p)), a["href"]
        _write_master(cfg, so, q, len(q["sm"]))
        export_deliverables(cfg)
        grown = catalog(cfg)
        coll2, items2 = _catalog_docs(cfg, so)
        assert grown.stats["items"] == len(items2) == 1 + 15 + 2
        assert coll2["extent"]["temporal"]["interval"][0][1] == "2020-01-12T23:59:59Z"
        assert items2["hdf5-sm1km_daily_202001"]["properties"]["end_datetime"] == "2020-01-12T23:59:59Z"
        assert items2["hdf5-sm1km_daily_202001"]["properties"]["sm1km:deps"] != jan["properties"]["sm1km:deps"]
        # unchanged items are not rewritten: the closed days' items, December; new ones added
        assert items2["geotiff-sm1km_daily_20191229"] == items["geotiff-sm1km_daily_20191229"]
        assert grown.stats["units_written"] == 9 + 2 + 1 + 1 + 1  # 9 new days, 2 rewritten, Jan, master, collection
        again = catalog(cfg)
    assert again.stats["units_written"] == 0


def test_sm1km_run_exports_and_catalogs_last(tmp_path):
    from sm1km.pipeline import DEFAULT_STAGES, STAGES, Pipeline

    assert DEFAULT_STAGES[-1] == "catalog" and DEFAULT_STAGES.index("export") < DEFAULT_STAGES.index("validate") and STAGES["export"] is export_deliverables
    cfg, _ = _world(str(tmp_path / "store"), {})
    res = Pipeline(cfg).run(stages=("export", "catalog"))
    assert res.stats["stages"]["export"]["units_written"] == 15 + 2
    assert res.stats["stages"]["catalog"]["items"] == 1 + 15 + 2
    again = Pipeline(cfg).run(stages=("export", "catalog"))
    assert again.stats["units_skipped"] == 2  # both stages found nothing to do


def test_recorded_day_digests_leave_every_published_day_alone(tmp_path):
    """With the master's per-day digests (``days.json``, recorded by downscale) a daily file depends
    on its own day only: growth rewrites no published day's file, only the open month's HDF5; a
    revised day rewrites that day's file and its month."""
    import pandas as pd

    from sm1km.storage.master import DayDigests

    root = str(tmp_path / "store")
    cfg, q = _world(root, {})
    dates = [str(pd.Timestamp(d).date()) for d in cfg.dates()]
    days = DayDigests(root, "master.zarr")
    _write_master(cfg, {}, q, N0)
    days.record({d: f"digest-{d}" for d in dates[:N0]})
    tif, h5 = str(tmp_path / "tif"), str(tmp_path / "h5")
    assert export(cfg, out=tif).stats["units_written"] == N0
    assert export(cfg, fmt="hdf5", out=h5).stats["units_written"] == 2
    _write_master(cfg, {}, q, len(q["sm"]))
    days.record({d: f"digest-{d}" for d in dates})
    grown_tif, grown_h5 = export(cfg, out=tif), export(cfg, fmt="hdf5", out=h5)
    assert grown_tif.stats["units_written"] == 9 and grown_tif.stats["units_rewritten"] == 0
    assert grown_h5.stats["units_written"] == grown_h5.stats["units_rewritten"] == 1  # January only
    days.record({**{d: f"digest-{d}" for d in dates}, "2019-12-30": "revised"})
    assert export(cfg, out=tif).stats["units_rewritten"] == 1
    res = export(cfg, fmt="hdf5", out=h5)
    assert res.stats["units_rewritten"] == 1 and res.stats["units_skipped"] == 1  # December rewritten, not January
