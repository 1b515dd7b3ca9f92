"""Raw inputs from object storage and over HTTPS ([13]): the synthetic world's raw files ingested
from ``s3://`` globs (moto server) and from ``{date:%Y%m%d}`` URL templates (a local Range HTTP
server on 127.0.0.1) give the stores of a local ingest; a day missing on the server (404) is
"not yet available" and ``period.end: latest`` stops before it; the local input cache is empty
afterwards; nothing recorded carries a query string."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml

from sm1km.config import RunConfig
from sm1km.errors import ConfigError, InputError
from sm1km.stages.ingest import ingest
from sm1km.stages.ingest.latest import resolve_latest
from sm1km.storage import input_files, store
from sm1km.storage.input_files import InputOptions, LocalCache

pytestmark = pytest.mark.timeout(600)

N_DAYS = 8
START, END = "2020-04-01", "2020-04-08"
CCI_NAME = "ESACCI-SOILMOISTURE-L3S-SSMV-COMBINED-{}000000-fv08.1.nc"
STORES = ("inputs/cci.zarr", "inputs/era5.zarr", "inputs/predictors.zarr", "inputs/stations.zarr")
#: global attrs that legitimately differ between two ingests of the same data from other places
VARYING_ATTRS = ("sm1km_config", "date_created", "history", "last_updated")
DYN = ("lst_day", "lst_night", "ndvi")
STA = ("elevation", "clay", "land_cover")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from sm1km.synth import preset, write_world

    return write_world(tmp_path_factory.mktemp("sources-world") / "world", preset("tiny", n_days=N_DAYS), seed=5)


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """A private input cache folder for this test (the ingest runs in-process: synchronous)."""
    d = tmp_path / "input-cache"
    monkeypatch.setenv(input_files.CACHE_DIR_ENV, str(d))
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    return d


def world_cfg(world, inputs: dict, root: str, *, start=START, end: str = END, storage=None,
              store_extra=None) -> RunConfig:
    data = yaml.safe_load(Path(world.run_yaml).read_text())
    data["inputs"] = {**inputs, "truth": None}
    if storage:
        data["inputs"]["storage"] = storage
    data["period"] = {"start": start, "end": end}
    data["store"] = {"root": root, **(store_extra or {})}
    data["cluster"] = {"kind": "synchronous"}
    return RunConfig.from_dict(data)


def local_inputs(base: Path) -> dict:
    return {"cci": f"{base}/cci/*.nc", "era5": f"{base}/era5/*.nc", "era5_lsm": f"{base}/era5_lsm.nc",
            "ismn": f"{base}/ismn",
            "predictors": {**{k: f"{base}/predictors/{k}_*.tif" for k in DYN},
                           **{k: f"{base}/predictors/{k}.tif" for k in STA}}}


def normalised(ds: xr.Dataset) -> xr.Dataset:
    ds = ds.copy()
    ds.attrs = {k: v for k, v in ds.attrs.items() if k not in VARYING_ATTRS}
    if "ismn_skipped" in ds.attrs:  # sources are where the files were read from: compare their names
        skipped = json.loads(ds.attrs["ismn_skipped"])
        ds.attrs["ismn_skipped"] = sorted((input_files.basename(s["source"]), s["reason"]) for s in skipped)
    return ds


def assert_same_stores(cfg_a: RunConfig, cfg_b: RunConfig, names=STORES) -> None:
    for name in names:
        a = store.open_dataset(cfg_a.store.url(name), cfg_a.store.storage_options()).load()
        b = store.open_dataset(cfg_b.store.url(name), cfg_b.store.storage_options()).load()
        xr.testing.assert_identical(normalised(a), normalised(b))
        ia = store.read_json(store.join(cfg_a.store.root, "_ledger", name, "ingest-index.json"),
                             cfg_a.store.storage_options())
        ib = store.read_json(store.join(cfg_b.store.root, "_ledger", name, "ingest-index.json"),
                             cfg_b.store.storage_options())
        assert ia == ib, name


def no_query_strings(cfg: RunConfig) -> None:
    for name in STORES:
        if not store.exists(cfg.store.url(name), cfg.store.storage_options()):
            continue
        attrs = store.open_group(cfg.store.url(name), cfg.store.storage_options(), mode="r").attrs
        text = json.dumps(dict(attrs))
        assert "X-Amz-Signature=" not in text or "X-Amz-Signature=***" in text
        assert "sekrit" not in text, name


@pytest.fixture(scope="module")
def local_run(world, tmp_path_factory):
    """The reference: every input ingested from the local files."""
    base = tmp_path_factory.mktemp("sources-local")
    cfg = world_cfg(world, local_inputs(Path(world.inputs)), str(base / "store"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SOURCE_DATE_EPOCH", "1700000000")
        for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):  # slow rasterio sessions otherwise
            mp.delenv(k, raising=False)
        ingest(cfg)
    return cfg


# ------------------------------------------------------------------------------------------------
def test_s3_globs_ingest_like_local_files(world, local_run, s3_bucket, tmp_path, cache_dir):
    import s3fs

    bucket, so = s3_bucket
    fs = s3fs.S3FileSystem(**so, skip_instance_cache=True)
    fs.put(str(world.inputs) + "/", f"{bucket}/raw/", recursive=True)
    base = f"s3://{bucket}/raw"
    inputs = local_inputs(Path("X"))
    inputs = json.loads(json.dumps(inputs).replace("X/", base + "/"))
    assert inputs["cci"] == f"{base}/cci/*.nc" and inputs["ismn"] == f"{base}/ismn"  # a prefix = a folder
    cfg = world_cfg(world, inputs, str(tmp_path / "store"), storage={"endpoint_url": so["endpoint_url"]})
    res = ingest(cfg)
    assert set(res) == set(STORES)
    assert_same_stores(local_run, cfg)
    assert not LocalCache(cache_dir).entries()  # every copy removed
    assert input_files.default_cache().held_bytes == 0
    # the recorded config names the s3:// globs (the only difference)
    attrs = store.open_group(cfg.store.url("inputs/cci.zarr"), mode="r").attrs
    assert json.loads(attrs["sm1km_config"])["inputs"]["cci"] == f"{base}/cci/*.nc"


def test_s3_inputs_listed_with_the_store_endpoint(world, s3_bucket):
    """Without inputs.storage the store's endpoint and options reach the inputs' bucket."""
    import s3fs

    from sm1km.stages.ingest.inputs import glob_files, input_options

    bucket, so = s3_bucket
    fs = s3fs.S3FileSystem(**so, skip_instance_cache=True)
    fs.put(str(Path(world.inputs) / "cci") + "/", f"{bucket}/cci/", recursive=True)
    cfg = world_cfg(world, {"cci": f"s3://{bucket}/cci/*.nc"}, f"s3://{bucket}/run",
                    store_extra={"endpoint_url": so["endpoint_url"]})
    assert input_options(cfg).storage_options["endpoint_url"] == so["endpoint_url"]
    files = glob_files(cfg.inputs.cci or "", "cci", cfg)
    assert len(files) == N_DAYS and all(f.startswith(f"s3://{bucket}/cci/ESACCI-") for f in files)
    with pytest.raises(InputError, match="no cci files match"):
        glob_files(f"s3://{bucket}/nothing/*.nc", "cci", cfg)
    with pytest.raises(InputError, match="cannot be listed"):
        glob_files("https://example.invalid/cci/*.nc", "cci", cfg)


def http_inputs(srv, world, *, days_query: str = "") -> dict:
    q = days_query
    pred = Path(world.inputs) / "predictors"
    stm = sorted(p.relative_to(world.inputs).as_posix() for p in (Path(world.inputs) / "ismn").rglob("*.stm"))
    return {
        "cci": srv.url("cci/" + CCI_NAME.format("{date:%Y%m%d}")) + q,
        "era5": srv.url("era5/era5_swvl1_{date:%Y%m}.nc") + q,
        "era5_lsm": srv.url("era5_lsm.nc") + q,
        "ismn": [srv.url(s) + q for s in stm],  # HTTPS cannot be listed: a list of URLs
        "predictors": {**{k: srv.url(f"predictors/{k}_{{date:%Y%m%d}}.tif") + q for k in DYN},
                       **{k: srv.url(f"predictors/{k}.tif") + q for k in STA if (pred / f"{k}.tif").exists()}},
    }


def test_http_templates_latest_stops_before_a_missing_day(world, tmp_path, cache_dir):
    from http_server import RangeHTTPServer

    served = tmp_path / "served"
    shutil.copytree(world.inputs, served)
    missing = "2020-04-07"
    (served / "cci" / CCI_NAME.format(missing.replace("-", ""))).unlink()  # not published yet: 404
    local_inp = tmp_path / "local-inputs"  # the local reference: the same files, the period up to the 6th
    shutil.copytree(served, local_inp)
    with RangeHTTPServer(served) as srv:
        # a pre-signed-looking query string: redacted wherever a URL is recorded
        inputs = http_inputs(srv, world, days_query="?X-Amz-Signature=sekrit")
        cfg = world_cfg(world, inputs, str(tmp_path / "store"), end="latest",
                        storage={"http_timeout_s": 20})
        assert cfg.period.is_latest
        with pytest.raises(ConfigError, match="latest"):
            cfg.dates()
        res = resolve_latest(cfg)
        assert res.day == dt.date(2020, 4, 6) and res.blocking == "inputs.cci"
        assert res.per_input["inputs.era5"] == dt.date.fromisoformat(END)  # the monthly file's last day
        assert res.per_input["inputs.predictors.lst_day"] == dt.date.fromisoformat(END)
        ingest(cfg)
        n_404 = sum(r.status == 404 for r in srv.requests())
        from sm1km.pipeline import update_config

        assert update_config(cfg).period.end == dt.date(2020, 4, 6)  # what `sm1km update` would target
    assert n_404 >= 1
    done = cfg.with_end(dt.date(2020, 4, 6))
    cci = store.open_dataset(done.store.url("inputs/cci.zarr")).load()
    assert str(cci.time.values[-1])[:10] == "2020-04-06" and cci.sizes["time"] == 6
    ref_inputs = {**local_inputs(local_inp), "ismn": sorted(str(p) for p in (local_inp / "ismn").rglob("*.stm"))}
    ref = world_cfg(world, ref_inputs, str(tmp_path / "ref-store"), end="2020-04-06")
    ingest(ref)
    assert_same_stores(ref, done)
    assert not LocalCache(cache_dir).entries()
    no_query_strings(done)
    idx = json.loads((tmp_path / "store" / "_ledger" / "inputs" / "cci.zarr" / "ingest-index.json").read_text())
    assert all("?" not in name for name in idx["files"])


def _resume(world, tmp_path) -> RunConfig:
    """Ingest up to the last published CCI day (04-07) with ``end: latest``, then publish 04-08 and
    ingest again; checks that latest only probes from the store's end on. Returns the config."""
    from http_server import RangeHTTPServer

    served = tmp_path / "served"
    shutil.copytree(world.inputs, served)
    late = served / "cci" / CCI_NAME.format("20200408")
    kept = tmp_path / late.name
    shutil.move(late, kept)
    with RangeHTTPServer(served) as srv:
        cfg = world_cfg(world, {"cci": http_inputs(srv, world)["cci"]}, str(tmp_path / "store"), end="latest")
        ingest(cfg)
        assert resolve_latest(cfg).day == dt.date(2020, 4, 7)
        srv.reset()
        assert resolve_latest(cfg).day == dt.date(2020, 4, 7)  # nothing new: the store's end
        probed = {r.path.rsplit("-", 2)[-2][:8] for r in srv.requests()}
        assert min(probed) == "20200408" and len(probed) <= 8  # from the open day on, one batch
        shutil.move(kept, late)  # published
        assert resolve_latest(cfg).day == dt.date(2020, 4, 8)
        ingest(cfg)
    return cfg


def test_latest_resumes_from_the_store_end(world, tmp_path, cache_dir):
    cfg = _resume(world, tmp_path)
    cci = store.open_dataset(cfg.store.url("inputs/cci.zarr")).load()
    assert cci.sizes["time"] == 8 and cci.attrs["time_coverage_end"] == "2020-04-08"
    np.testing.assert_array_equal(cci.time.values.astype("datetime64[D]"),
                                  np.arange("2020-04-01", "2020-04-09", dtype="datetime64[D]"))
    from sm1km.storage.readers import read_cci_day

    day8 = read_cci_day(Path(world.inputs) / "cci" / CCI_NAME.format("20200408"), cfg.coarse_region)
    np.testing.assert_array_equal(cci.sm.values[-1], day8.sm.values[0])
    assert not LocalCache(cache_dir).entries()


# --- the pieces ---------------------------------------------------------------------------------
def test_templates_lists_and_names():
    days = [dt.date(2020, 1, 31), dt.date(2020, 2, 1), dt.date(2020, 2, 2)]
    assert input_files.expand_template("https://h/m_{date:%Y%m}.nc", days) == ["https://h/m_202001.nc",
                                                                                  "https://h/m_202002.nc"]
    assert input_files.expand_template("s3://b/{date}/x.nc", days[:1]) == ["s3://b/2020-01-31/x.nc"]
    assert input_files.basename("https://h/a/b.nc?X-Amz-Signature=abc#f") == "b.nc"
    assert input_files.display("https://u:p@h/b.nc?sig=abc") == "https://***@h/b.nc?sig=***"
    cfg = RunConfig.from_dict({"region": {"west": 10, "south": 45, "east": 11, "north": 46},
                               "period": {"start": "2020-04-01", "end": "latest"}, "store": {"root": "/tmp/x"},
                               "inputs": {"cci": ["a/*.nc", "https://h/{date:%Y%m%d}.nc"],
                                          "storage": {"endpoint_url": "http://minio:9000"}}})
    assert cfg.inputs.specs()["cci"] == ["a/*.nc", "https://h/{date:%Y%m%d}.nc"]
    for bad in ({"storage": {"client_kwargs": {"aws_secret_access_key": "x"}}},
                {"storage": {"endpoint_url": "http://u:p@minio:9000"}}, {"cci": []}):
        with pytest.raises(ConfigError):
            RunConfig.from_dict({"region": {"west": 10, "south": 45, "east": 11, "north": 46},
                                 "period": {"start": "2020-04-01", "end": "2020-04-02"},
                                 "store": {"root": "/tmp/x"}, "inputs": bad})


def test_local_cache_is_bounded_and_cleaned(tmp_path):
    from http_server import RangeHTTPServer

    (tmp_path / "srv").mkdir()
    (tmp_path / "srv" / "a.bin").write_bytes(b"x" * 5000)
    cache = LocalCache(tmp_path / "cache", max_bytes=4096, wait_s=5)
    opts = InputOptions(http_timeout_s=10)
    with RangeHTTPServer(tmp_path / "srv") as srv:
        with pytest.raises(InputError, match="larger than the local input cache"):
            with cache.local_paths([srv.url("a.bin")], opts):
                pass
        big = LocalCache(tmp_path / "cache", max_bytes=1 << 20, wait_s=5)
        with big.local_paths([srv.url("a.bin") + "?token=zzz", str(tmp_path / "srv" / "a.bin")], opts) as (p, q):
            assert Path(p).name == "a.bin" and Path(p).read_bytes() == b"x" * 5000 and q.endswith("a.bin")
            assert big.held_bytes == 5000
        assert big.held_bytes == 0 and not big.entries()
        with pytest.raises(InputError) as err:  # an error inside names the URL (redacted), not the copy
            with big.local_paths([srv.url("a.bin") + "?token=zzz"], opts) as (p,):
                raise InputError(p, "bad file.", "fix it.")
        assert err.value.where.endswith("a.bin?token=***") and not big.entries()
        with pytest.raises(InputError, match="not found"):
            with big.local_paths([srv.url("missing.bin")], opts):
                pass
        assert input_files.probe([srv.url("a.bin"), srv.url("nope.bin")], opts) == {srv.url("a.bin"): True,
                                                                                    srv.url("nope.bin"): False}
        assert input_files.sha256(srv.url("a.bin"), opts) == input_files.sha256(str(tmp_path / "srv" / "a.bin"))


def test_remote_netcdf4_read_through_a_file_object(world, tmp_path, monkeypatch):
    """A netCDF-4 CCI day over HTTP is read with range requests from a file object: no local copy
    (a cache of 1 byte would refuse any), and the same values and attrs as the local file."""
    from http_server import RangeHTTPServer
    from sm1km.storage.readers import read_cci_day

    monkeypatch.setenv(input_files.CACHE_DIR_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv(input_files.CACHE_BYTES_ENV, "1")
    local = sorted((Path(world.inputs) / "cci").glob("*.nc"))[0]
    region = RunConfig.from_yaml(world.run_yaml).coarse_region
    with RangeHTTPServer(Path(world.inputs)) as srv:
        url = srv.url(f"cci/{local.name}") + "?token=sekrit"
        remote = read_cci_day(url, region, input_options=InputOptions(http_timeout_s=10))
        assert all(r.method in ("GET", "HEAD") for r in srv.requests())
    xr.testing.assert_identical(read_cci_day(local, region), remote)
    assert remote.attrs["source_file"] == local.name
    with pytest.raises(InputError, match="larger than the local input cache"):  # GeoTIFFs do need the copy
        from sm1km.storage.readers import read_raster

        with RangeHTTPServer(Path(world.inputs)) as srv:
            read_raster(srv.url("predictors/clay.tif"), region, 10, input_options=InputOptions(http_timeout_s=10))
