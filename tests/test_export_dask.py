"""Export on a dask cluster: S3 store → S3 files, tasks running concurrently, sm1km errors raised in
a task reach the driver with their where/problem/fix, and every task survives pickling (as it must
to reach worker processes; the cluster here runs in-process threads to keep the test fast)."""

from __future__ import annotations

import posixpath

import numpy as np
import pytest
import rasterio
import xarray as xr

import export_stores as es
from sm1km.errors import StoreError
from sm1km.stages.export import export
from sm1km.storage import store


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=2, processes=False, dashboard_address=":0") as cluster, \
            Client(cluster) as c:
        yield c


@pytest.mark.network
def test_export_on_a_dask_cluster_s3_to_s3(client, s3_bucket, tmp_path):
    bucket, so = s3_bucket
    root = f"s3://{bucket}/run"
    cfg = es.run_config(root, so)
    q = es.make_master(cfg, so)
    tifs = export(cfg, client, fmt="geotiff", out=store.join(root, "tif"), files_per_task=1, window_pixels=200)["files"]
    h5s = export(cfg, client, fmt="hdf5", out=store.join(root, "h5"), window_pixels=200)["files"]
    assert len(tifs) == 6 and len(h5s) == 2
    assert es.listing(store.join(root, "tif"), so) == ["_manifest.json"] + [posixpath.basename(f) for f in tifs]
    for k, f in enumerate(tifs):
        with rasterio.open(es.local_copy(f, so, tmp_path)) as d:
            np.testing.assert_array_equal(d.read(1), q["sm"][k])
    with xr.open_dataset(es.local_copy(h5s[1], so, tmp_path), engine="h5netcdf", mask_and_scale=False) as ds:
        np.testing.assert_array_equal(ds.sm.values, q["sm"][2:])
    # a worker's upload into a bucket that does not exist: a StoreError on the driver
    with pytest.raises(StoreError, match="upload failed") as err:
        export(cfg, client, fmt="hdf5", out=f"s3://{bucket}-missing/x", out_storage_options=so)
    assert err.value.fix and "bucket" in err.value.fix


def test_tasks_and_errors_survive_pickling(tmp_path):
    import pickle

    from sm1km.stages.export import plan_jobs, run_job
    from sm1km.stages.export.common import open_source

    cfg = es.run_config(str(tmp_path / "store"), {})
    es.make_master(cfg, {})
    src = open_source(cfg.store.url("master.zarr"), {}, "daily", cfg.fine_grid.per_deg, ["sm"])
    for fmt, layout in (("geotiff", "latlon"), ("hdf5", "latlon"), ("hdf5", "modis-sinusoidal")):
        jobs = plan_jobs(src, fmt=fmt, layout=layout, t_indices=[0, 1], rows=slice(0, 20), cols=slice(0, 20),
                         variables=["sm"], out=str(tmp_path / fmt), out_storage_options={}, window_pixels=100)
        assert jobs and pickle.loads(pickle.dumps(jobs)) == jobs
    bad = pickle.loads(pickle.dumps(jobs[0]))
    import dataclasses

    bad = dataclasses.replace(bad, source=dataclasses.replace(bad.source, url=str(tmp_path / "gone.zarr")))
    with pytest.raises(StoreError) as err:
        run_job(bad)
    back = pickle.loads(pickle.dumps(err.value))        # what a worker sends back: the error itself
    assert type(back) is StoreError and back.where.endswith("gone.zarr") and back.fix
