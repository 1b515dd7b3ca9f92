"""Scientists read the published stores over plain HTTP: ``xarray.open_zarr(url)``, no credentials,
no listing, consolidated metadata, CF decoding — from a static server that honours Range requests
(tests/http_server.py) and from an S3 bucket (moto) through its HTTP endpoint, not through s3fs.
The stores are made by the real stages (downscale → aggregate) on the downscale test world."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import requests
import xarray as xr
import zarr

from http_server import RangeHTTPServer
from http_world import built_run, run_root
from sm1km.storage import publish, store

pytestmark = pytest.mark.network

PRODUCTS = ("master", "monthly", "fused")
V2_PROBES = {".zgroup", ".zattrs", ".zmetadata"}  # zarr's format probe when zarr_format is not given (404s)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    cfg, out = built_run(str(run_root(tmp_path_factory)))
    return cfg, out


@pytest.fixture(scope="module")
def server(run):
    cfg, _ = run
    with RangeHTTPServer(cfg.store.root) as srv:
        yield srv


def _local(url):
    return xr.open_zarr(url, consolidated=True)


def _assert_no_listing_and_only_root_metadata(recs, store_name):
    """Every request is the root zarr.json, a v2 probe (404), or a chunk/shard object — no listing,
    no per-array zarr.json (consolidated metadata is enough)."""
    prefix = f"/{store_name}/"
    for r in recs:
        assert r.method == "GET", r
        assert r.path.startswith(prefix), r
        rel = r.path[len(prefix):]
        assert not r.path.endswith("/"), f"directory request (listing): {r}"
        if rel == "zarr.json":
            assert r.status == 200
        elif rel in V2_PROBES:
            assert r.status == 404
        else:
            assert re.fullmatch(r"[a-z_]+/c(/\d+)*", rel), f"unexpected request {r}"
            # a chunk that is all fill is not stored (Zarr spec): a 404 that zarr reads as fill
            assert r.status in (200, 206, 404), r


def test_server_honours_ranges_and_never_lists(tmp_path):
    (tmp_path / "d").mkdir()
    payload = bytes(range(256)) * 4
    (tmp_path / "d" / "obj").write_bytes(payload)
    with RangeHTTPServer(tmp_path) as srv:
        url = srv.url("d/obj")
        r = requests.get(url, headers={"Range": "bytes=-68"})
        assert r.status_code == 206 and r.content == payload[-68:]
        assert r.headers["Content-Range"] == f"bytes {len(payload) - 68}-{len(payload) - 1}/{len(payload)}"
        r = requests.get(url, headers={"Range": "bytes=10-19"})
        assert r.status_code == 206 and r.content == payload[10:20]
        r = requests.get(url, headers={"Range": "bytes=100-"})
        assert r.status_code == 206 and r.content == payload[100:]
        assert requests.get(url).content == payload
        assert requests.get(url, headers={"Range": f"bytes={len(payload) + 5}-"}).status_code == 416
        assert requests.get(srv.url("d/")).status_code in (403, 404)   # no directory listing
        assert requests.get(srv.url("d/missing")).status_code == 404
        t = srv.totals()
        assert t["requests"] == 7 and t["range_requests"] == 4
        assert t["bytes"] == 68 + 10 + (len(payload) - 100) + len(payload)


@pytest.mark.parametrize("product", PRODUCTS)
def test_open_zarr_over_http_equals_local(run, server, product):
    cfg, out = run
    local = _local(out[product])
    name = store.join(out[product]).rsplit("/", 1)[-1]
    server.reset()
    remote = xr.open_zarr(server.url(name))  # plain call: no options, no credentials
    xr.testing.assert_identical(remote.load(), local.load())
    _assert_no_listing_and_only_root_metadata(server.requests(), name)
    assert sum(r.path.endswith("/zarr.json") for r in server.requests()) == 1  # consolidated: one metadata GET
    # CF decoding: coordinates and time, floats with NaN for fill
    assert remote.time.dtype == np.dtype("datetime64[ns]")
    assert np.all(np.diff(remote.lat.values) < 0) and np.all(np.diff(remote.lon.values) > 0)
    if product != "fused":  # (the test world's fused.zarr is written bare, not by the fuse stage)
        assert remote.lat.attrs["units"] == "degrees_north" and remote.lon.attrs["units"] == "degrees_east"
    sm = remote["sm"]
    assert sm.dtype.kind == "f"
    if product != "fused":
        assert sm.encoding["dtype"] == np.dtype("int16") and sm.encoding["scale_factor"] == 0.001
        assert sm.attrs["units"] == "m3 m-3" and sm.attrs["standard_name"].startswith("volume_fraction")
    v = sm.values
    assert np.isnan(v).any() and np.nanmin(v) >= 0.0 and np.nanmax(v) <= 1.0


def test_master_values_decode_to_int16_times_scale(run, server):
    """The float values xarray returns are exactly q * 0.001 of the stored int16 (NaN where fill)."""
    cfg, out = run
    ds = xr.open_zarr(server.url("master.zarr"))
    g = zarr.open_group(server.url("master.zarr"), mode="r")
    q = g["sm"][:]
    assert q.dtype == np.int16
    expect = np.where(q == -32768, np.nan, q * 0.001)
    np.testing.assert_array_equal(ds.sm.values, expect)
    assert (q == -32768).sum() == np.isnan(ds.sm.values).sum() > 0
    # sea cell (south-east) is fill in every day
    assert np.isnan(ds.sm.values[:, 10:, 10:]).all()
    assert list(pd.DatetimeIndex(ds.time.values)) == list(cfg.dates())


def test_plain_zarr_finds_cf_attributes(server):
    """Readers that are not xarray find the packing on the array (zarr attributes)."""
    for name in ("master.zarr", "monthly.zarr"):
        g = zarr.open_group(server.url(name), mode="r")
        a = g["sm"]
        assert a.dtype == np.int16 and a.fill_value == -32768
        assert a.attrs["scale_factor"] == 0.001 and a.attrs["add_offset"] == 0.0
        assert a.attrs["_FillValue"] == -32768 and a.attrs["units"] == "m3 m-3"
        assert a.attrs["grid_mapping"] == "crs" and "crs_wkt" in g["crs"].attrs
        assert tuple(a.metadata.dimension_names) == ("time", "lat", "lon")
        assert g["time"].attrs["units"].startswith("days since 1970-01-01")


def test_point_series_uses_range_requests_per_shard(run, server):
    """A point time series: per time-block shard one suffix range (the index) + one range per inner
    chunk that holds the pixel (the master's inner chunks are a few days long), or one GET of the
    whole shard when every inner chunk of it is needed; ~3 objects per year at the defaults."""
    cfg, out = run
    ds = xr.open_zarr(server.url("master.zarr"), chunks=None)
    inner, shard = ds.sm.encoding["chunks"], ds.sm.encoding["shards"]
    server.reset()
    series = ds.sm.isel(lat=3, lon=4).values
    recs = [r for r in server.requests() if "/sm/" in r.path]
    n_days = cfg.period.n_days
    n_blocks = -(-n_days // cfg.grid.time_block_days)
    assert len({r.path for r in recs}) == n_blocks
    per_shard = int(np.prod([s // c for s, c in zip(shard, inner)]))
    expected_suffix, expected_ranges, expected_whole = 0, 0, 0
    for t0 in range(0, n_days, shard[0]):
        needed = -(-min(shard[0], n_days - t0) // inner[0])
        if needed == per_shard:
            expected_whole += 1
        else:
            expected_suffix, expected_ranges = expected_suffix + 1, expected_ranges + needed
    suffix = [r for r in recs if r.range and r.range.startswith("bytes=-")]
    ranges = [r for r in recs if r.range and re.fullmatch(r"bytes=\d+-\d+", r.range)]
    assert len(suffix) == expected_suffix and len(ranges) == expected_ranges
    assert len(recs) == expected_suffix + expected_ranges + expected_whole
    assert all(r.status == 206 for r in recs if r.range)
    assert np.isfinite(series).all() and series.shape == (n_days,)


def test_fused_written_by_the_fuse_stage_over_http(tmp_path):
    """fused.zarr as the real fuse stage writes it (CF attributes, consolidated) reads over HTTP."""
    from fusion_testworld import make_cfg, make_world, write_inputs
    from sm1km.stages.fuse import fuse

    world = make_world(nt=30)
    cfg = make_cfg(tmp_path / "store", world)
    write_inputs(cfg, world)
    fuse(cfg)
    publish.check_published(cfg.store.url("fused.zarr"))
    with RangeHTTPServer(cfg.store.root) as srv:
        remote = xr.open_zarr(srv.url("fused.zarr"))
        xr.testing.assert_identical(remote.load(), _local(cfg.store.url("fused.zarr")).load())
        _assert_no_listing_and_only_root_metadata(srv.requests(), "fused.zarr")
    assert remote.sm.attrs["units"] == "m3 m-3" and remote.lat.attrs["units"] == "degrees_north"
    assert remote.time.dtype == np.dtype("datetime64[ns]") and remote.sizes["time"] == 30
    assert remote.source_flag.dtype.kind in "uf" and np.isnan(remote.sm.values).any()  # sea


def test_check_published_accepts_finished_stores(run):
    cfg, out = run
    for product in PRODUCTS:
        s = publish.check_published(out[product])
        assert s["arrays"]["sm"][0] == (2 if product == "monthly" else 40)
        if product != "fused":  # written by the stages: coverage attributes from store.finalize
            assert s["time_coverage_start"] == "2020-01-01" and s["time_coverage_end"] == "2020-02-09"


def test_read_s3_bucket_over_plain_http(run, s3_bucket, moto_server):
    """The stores copied to a bucket open over the bucket's HTTP endpoint anonymously, once a
    public-read (GetObject only) policy is set; without it the bucket refuses anonymous reads."""
    import boto3
    import s3fs

    cfg, out = run
    bucket, opts = s3_bucket
    fs = s3fs.S3FileSystem(**opts, skip_instance_cache=True)
    for product in PRODUCTS:
        fs.put(out[product], f"{bucket}/sm1km/{product}.zarr", recursive=True)
    url = f"{moto_server}/{bucket}/sm1km/master.zarr"
    assert requests.get(f"{url}/zarr.json").status_code == 403  # private until published
    policy = publish.public_read_policy(bucket, "sm1km")
    assert [s["Action"] for s in policy["Statement"]] == ["s3:GetObject"]  # readers need no listing
    boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1").put_bucket_policy(
        Bucket=bucket, Policy=json.dumps(policy))
    for product in PRODUCTS:
        remote = xr.open_zarr(f"{moto_server}/{bucket}/sm1km/{product}.zarr")
        xr.testing.assert_identical(remote.load(), _local(out[product]).load())
    r = requests.get(f"{url}/sm/c/0/0/0", headers={"Range": "bytes=-68"})
    assert r.status_code == 206 and len(r.content) == 68
