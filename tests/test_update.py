"""``sm1km update``: the record grows day by day and equals one run to the last day ([13] acceptance).

A tiny world of 15 days: a run to day 10 (model trained once), then five daily ``sm1km update
--until`` calls (days 11..15) on one root; on a second root the same model and one pass of every
product stage to day 15. The stores' decoded arrays and time coordinates must be equal, the days
already published must keep their bytes across every update, and a sixth update is a no-op that
says so. Local root and S3 root (moto).
"""

from __future__ import annotations

import datetime as dt
import hashlib

import numpy as np
import pytest
import xarray as xr

from sm1km.cli import main
from sm1km.errors import ModelError
from sm1km.pipeline import UPDATE_STAGES, Pipeline, check_pinned_model
from sm1km.storage import store
from sm1km.testing import trees
from sm1km.testing.worlds import fixed_timestamps, run_stage, tiny_world

DAYS, FIRST = 15, 10
GRID_STORES = ("fused.zarr", "master.zarr", "monthly.zarr")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return tiny_world(tmp_path_factory.getbasetemp(), days=DAYS)


def _configs(world, root, endpoint=None):
    full = world.config(root, endpoint_url=endpoint)
    start = full.period.start
    first_end = start + dt.timedelta(days=FIRST - 1)
    full = world.config(root, endpoint_url=endpoint,
                        fusion={"reference_period": {"start": str(start), "end": str(first_end)}})
    first = full.model_copy(update={"period": full.period.model_copy(update={"end": first_end})})
    return first, full


def _root(kind, tmp_path, request, name):
    if kind == "s3":
        endpoint = request.getfixturevalue("moto_server")
        bucket = f"upd-{hashlib.md5(str(tmp_path).encode()).hexdigest()[:10]}"
        import s3fs
        fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint}, key="testing", secret="testing")
        if not fs.exists(bucket):
            fs.mkdir(bucket)
        return f"s3://{bucket}/{name}", endpoint
    return str(tmp_path / name), None


def _published_raw(cfg, name, days):
    """sha256 of each published day's raw (encoded) values of every time-dimensioned array."""
    g = store.open_group(cfg.store.url(name), cfg.store.storage_options())
    out = {}
    for key, arr in g.arrays():
        dims = arr.metadata.dimension_names or ()
        if dims and dims[0] == "time" and key != "time":
            for i in range(min(days, arr.shape[0])):
                out[f"{key}[{i}]"] = hashlib.sha256(np.ascontiguousarray(arr[i]).tobytes()).hexdigest()
    return out


def _open(cfg, name):
    return xr.open_zarr(cfg.store.url(name), storage_options=cfg.store.storage_options() or None,
                        consolidated=True, decode_coords="all")


#: attributes that name the run's own root or its history (each root has its own): left out
ROOT_ATTRS = {"source_store", "sm1km_config", "history"}


def _same_export(key, a: bytes, b: bytes, tmp):
    """Same file content: decoded arrays and every attribute except :data:`ROOT_ATTRS`."""
    if key.endswith(".tif"):
        import rasterio

        pa, pb = tmp / "a.tif", tmp / "b.tif"
        pa.write_bytes(a)
        pb.write_bytes(b)
        with rasterio.open(pa) as ra, rasterio.open(pb) as rb:
            np.testing.assert_array_equal(ra.read(), rb.read(), err_msg=key)
            ta, tb = ({k: v for k, v in r.tags().items() if k not in ROOT_ATTRS} for r in (ra, rb))
            assert ta == tb, (key, {k: (ta.get(k), tb.get(k)) for k in set(ta) | set(tb) if ta.get(k) != tb.get(k)})
            assert ra.profile == rb.profile, key
    elif key.endswith((".h5", ".hdf5")):
        import h5py

        pa, pb = tmp / "a.h5", tmp / "b.h5"
        pa.write_bytes(a)
        pb.write_bytes(b)
        with h5py.File(pa) as fa, h5py.File(pb) as fb:
            def items(f):
                out = {}
                f.visititems(lambda n, o: out.__setitem__(n, o))
                return out
            ia, ib = items(fa), items(fb)
            assert sorted(ia) == sorted(ib), key
            for n in ia:
                if isinstance(ia[n], h5py.Dataset):
                    np.testing.assert_array_equal(ia[n][()], ib[n][()], err_msg=f"{key}:{n}")
            for oa, ob in [(fa, fb)] + [(ia[n], ib[n]) for n in ia]:
                skip = ROOT_ATTRS | {"REFERENCE_LIST", "DIMENSION_LIST"}  # HDF5 object references
                aa = {k: v for k, v in oa.attrs.items() if k not in skip}
                ab = {k: v for k, v in ob.attrs.items() if k not in skip}
                assert sorted(aa) == sorted(ab), (key, oa.name)
                for k in aa:
                    np.testing.assert_array_equal(aa[k], ab[k], err_msg=f"{key}:{oa.name}@{k}")
    else:
        assert a == b, key


def _run_to_first(cfg):
    for name in ("ingest", "fuse", "train", "downscale", "aggregate", "export", "catalog"):
        run_stage(name, cfg)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["local", "s3"])
def test_daily_updates_equal_one_run(kind, world, tmp_path, request):
    root_a, endpoint = _root(kind, tmp_path, request, "grown")
    first, full = _configs(world, root_a, endpoint)
    _run_to_first(first)
    yaml_a = world.write_run_yaml(full, tmp_path / "a")

    published: dict[str, dict[str, str]] = {n: _published_raw(first, n, FIRST) for n in ("fused.zarr", "master.zarr")}
    for day in range(FIRST + 1, DAYS + 1):
        until = full.period.start + dt.timedelta(days=day - 1)
        with fixed_timestamps():
            assert main(["update", "--config", str(yaml_a), "--until", until.isoformat()]) == 0
        for name, sums in published.items():
            now = _published_raw(full, name, FIRST)
            changed = sorted(k for k in sums if now.get(k) != sums[k])
            assert not changed, f"update to day {day} changed published values of {name}: {changed[:5]}"
        with _open(full, "master.zarr") as m:
            assert m.sizes["time"] == day
            assert str(m["time"].values[-1])[:10] == until.isoformat()

    # the same model, every product stage in one pass to day 15 on a fresh root
    root_b, _ = _root(kind, tmp_path, request, "oneshot")
    _, one = _configs(world, root_b, endpoint)
    src_fs, src = store.filesystem(full.store.url("model"), full.store.storage_options())
    for path in src_fs.find(src):
        rel = path[len(src.rstrip("/")) + 1:]
        with src_fs.open(path, "rb") as f:
            store.put_atomic(one.store.url("model", rel), f.read(), one.store.storage_options())
    with fixed_timestamps():
        Pipeline(one).run(stages=UPDATE_STAGES)

    for name in GRID_STORES:
        with _open(full, name) as a, _open(one, name) as b:
            np.testing.assert_array_equal(a["time"].values, b["time"].values, err_msg=f"{name}: time coordinate")
            assert set(a.data_vars) == set(b.data_vars), name
            for v in a.data_vars:
                xr.testing.assert_equal(a[v].load(), b[v].load())
    exp_a = trees.snapshot(full.store.url("exports"), full.store.storage_options())
    exp_b = trees.snapshot(one.store.url("exports"), one.store.storage_options())
    assert sorted(exp_a) == sorted(exp_b) and len(exp_a) > 1, "the grown and the one-shot exports hold other files"
    for key in exp_a:
        _same_export(key, exp_a[key], exp_b[key], tmp_path)

    # a sixth update in a row: nothing to do, says so, changes no object
    before = trees.snapshot(full.store.root, full.store.storage_options())
    with fixed_timestamps():
        out = Pipeline(full).update()
    assert out.stats["up_to_date"] is True
    trees.assert_same(trees.without(before), trees.without(trees.snapshot(full.store.root,
                                                                          full.store.storage_options())))


def test_update_never_trains(world, tmp_path, capsys):
    """No model in the store: update refuses (exit 2) and names the fix; nothing is written."""
    cfg = world.config(str(tmp_path / "nomodel"))
    with pytest.raises(ModelError, match="never trains"):
        check_pinned_model(cfg)
    yaml_path = world.write_run_yaml(cfg, tmp_path / "cfg")
    assert main(["update", "--config", str(yaml_path)]) == 2
    err = capsys.readouterr().err
    assert "sm1km train" in err
    assert not any(k for k in trees.snapshot(str(tmp_path / "nomodel")) if not k.startswith("_locks/"))


def test_update_refuses_another_model(world, tmp_path):
    """``model.sha256`` pins the model: a stored model with another digest is refused."""
    cfg = world.config(str(tmp_path / "pinned"))
    run_stage("ingest", cfg)
    run_stage("fuse", cfg)
    run_stage("train", cfg)
    sha = check_pinned_model(cfg)
    assert len(sha) == 64
    other = cfg.model_copy(update={"model": cfg.model.model_copy(update={"sha256": "0" * 64})})
    with pytest.raises(ModelError, match="never switches models"):
        check_pinned_model(other)
    same = cfg.model_copy(update={"model": cfg.model.model_copy(update={"sha256": sha.upper()})})
    assert check_pinned_model(same) == sha


def _with_inputs_copy(world, cfg, dest):
    """``cfg`` reading a private copy of the world's raw inputs (so one can be revised)."""
    import shutil

    src = world.folder / "inputs"
    shutil.copytree(src, dest)
    data = cfg.model_dump(mode="json")

    def swap(v):
        if isinstance(v, str) and v.startswith(str(src)):
            return str(dest) + v[len(str(src)):]
        if isinstance(v, dict):
            return {k: swap(x) for k, x in v.items()}
        if isinstance(v, list):
            return [swap(x) for x in v]
        return v
    data["inputs"] = swap(data["inputs"])
    return type(cfg).from_dict(data)


def _revise_era5_day(inputs, day: str):
    """ERA5T replaced by the final ERA5 for one day: its swvl1 values change a little."""
    import os

    files = sorted((inputs / "era5").glob("*.nc"))
    assert files, inputs
    for f in files:
        with xr.open_dataset(f, decode_cf=False, mask_and_scale=False, decode_times=False) as ds:
            ds = ds.load()
        tname = "time" if "time" in ds else "valid_time"
        t = xr.decode_cf(ds[[tname]])[tname].values.astype("datetime64[D]")
        sel = t == np.datetime64(day)
        if not sel.any():
            continue
        v = ds["swvl1"].values.copy()
        fill = ds["swvl1"].attrs.get("_FillValue")
        ok = (v != fill) if fill is not None else np.isfinite(v)
        bump = np.zeros_like(v)
        bump[sel] = 30 if v.dtype.kind in "iu" else 0.01
        ds["swvl1"].values = np.where(ok, v + bump, v).astype(v.dtype)
        for var in ds.variables.values():
            var.encoding = {}
        tmp = f.with_suffix(".tmp.nc")
        ds.to_netcdf(tmp)
        os.replace(tmp, f)
        return
    raise AssertionError(f"no ERA5 file holds {day}")


@pytest.mark.slow
def test_a_revised_day_recomputes_only_its_dependants(world, tmp_path):
    """Final ERA5 replaces ERA5T for day 12 of a finished 15-day record: after `ingest --overwrite`,
    `update` recomputes the fused block, the master shards and month that hold that day and that
    day's export files — nothing else — and the result equals a fresh run on the revised inputs."""
    _, full = _configs(world, str(tmp_path / "live"))
    full = _with_inputs_copy(world, full, tmp_path / "inputs")
    _run_to_first(full)
    yaml_path = world.write_run_yaml(full, tmp_path / "cfg")
    before = trees.snapshot(full.store.root)
    revised = (full.period.start + dt.timedelta(days=11)).isoformat()
    _revise_era5_day(tmp_path / "inputs", revised)

    with fixed_timestamps():
        assert main(["update", "--config", str(yaml_path)]) == 2  # a changed input is never taken silently
        assert trees.without(trees.snapshot(full.store.root)) == trees.without(before)
        assert main(["ingest", "--config", str(yaml_path), "--overwrite"]) == 0
        out = Pipeline(full).update()
    st = out.stats["stages"]
    print("revised-day update:", {n: {k: v for k, v in c.items() if k.startswith("units")} for n, c in st.items()})
    assert out.stats["up_to_date"] is False
    # fuse and downscale: the units of the revised day's time block only (1 of the 4 blocks of 4 days)
    n_blocks = -(-DAYS // full.grid.time_block_days)
    for name in ("fuse", "downscale"):
        assert st[name]["units_written"] * n_blocks == st[name]["units_total"], (name, st[name])
    assert st["ingest"]["units_written"] == 0  # ingest --overwrite already took the revised day
    # the one month (every tile of it); exports: that day's COG rewritten, the month's HDF5 rewritten
    assert st["aggregate"]["units_written"] == st["aggregate"]["units_total"], st["aggregate"]
    assert st["export"]["units_written"] == 2 and st["export"]["units_rewritten"] == 1, st["export"]
    after = trees.snapshot(full.store.root)
    changed = sorted(k for k in after if before.get(k) != after[k] and not k.startswith("_"))
    cogs = [k for k in changed if k.endswith(".tif")]
    assert cogs and all(revised.replace("-", "") in k for k in cogs), cogs  # only that day's COGs
    print("objects changed:", len(changed), "COGs:", cogs)

    # a fresh run on the revised inputs, same model
    root_b = str(tmp_path / "fresh")
    fresh = full.model_copy(update={"store": full.store.model_copy(update={"root": root_b})})
    src_fs, src = store.filesystem(full.store.url("model"))
    for path in src_fs.find(src):
        with src_fs.open(path, "rb") as f:
            store.put_atomic(fresh.store.url("model", path[len(src.rstrip("/")) + 1:]), f.read())
    with fixed_timestamps():
        Pipeline(fresh).run(stages=UPDATE_STAGES)
    for name in GRID_STORES:
        with _open(full, name) as a, _open(fresh, name) as b:
            np.testing.assert_array_equal(a["time"].values, b["time"].values, err_msg=f"{name}: time")
            for v in a.data_vars:
                xr.testing.assert_equal(a[v].load(), b[v].load())
