"""The bad-input corpus: damaged copies of the tiny synthetic world, generated (no binaries committed).

Every :class:`BadCase` turns a *copy* of a world folder (``inputs/``, ``run.yaml``, ``store/``)
into one realistic fault — a truncated netCDF, an HTML error page saved as ``.nc``, a GeoTIFF in
°C, a tampered model file, a config typo … — and says which CLI command meets it and what a good
answer looks like: exit code 2, one paragraph naming the file or key (``names``) with the
problem and a ``Fix:`` (``says``), no traceback, the stores untouched. A few faults are *accepted*
(``exit_code`` 0): inputs the pipeline must read correctly (longitudes 0–360, a station outside
the region).

Used by ``tests/test_bad_input.py``; ``tests/data/bad/make_bad.py`` writes the corpus to a folder
for people who want to look at the files or try them by hand.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import yaml

#: the world every case starts from: 1°x1° across the Greenwich meridian (so 0-360 longitudes
#: really differ from -180..180), factor 10, 10 days
WORLD_BBOX = (-0.5, 45.0, 0.5, 46.0)
WORLD_DAYS = 10
WORLD_SEED = 11
DAY = "20200405"  # the day whose files get damaged
S3_NO_BUCKET = "sm1km-no-such-bucket"


@dataclasses.dataclass(frozen=True)
class BadCase:
    """One fault: ``damage(world)`` edits the world copy and returns what the messages must name."""

    name: str
    command: str  # CLI stage that meets the fault
    damage: Callable[[Path], list[str]]
    says: tuple[str, ...]  # words of the problem statement the message must contain
    exit_code: int = 2
    needs: str = ""  # "model": the world needs a model; "s3": a moto endpoint (world["endpoint"])
    #: "all": every store unchanged (the fault is found before anything is written); "existing": a fault
    #: met mid-run (a damaged object of a finished store) may leave finished units of the stage's own
    #: store, but no object that was there changes and the new store does not claim to be complete
    keeps: str = "all"

    def __str__(self) -> str:
        return self.name


# --------------------------------------------------------------------------------------------
# world helpers
# --------------------------------------------------------------------------------------------
def write_tiny_world(folder: Path, cluster_kind: str = "synchronous"):
    """The corpus world (synth ``tiny`` preset across 0°), run.yaml with a synchronous cluster."""
    from sm1km.synth import preset, write_world

    w = write_world(folder, preset("tiny", n_days=WORLD_DAYS, bbox=WORLD_BBOX), seed=WORLD_SEED)
    edit_config(Path(w.run_yaml), lambda d: d.update(cluster={"kind": cluster_kind}))
    return w


def edit_config(run_yaml: Path, fn: Callable[[dict], object]) -> None:
    data = yaml.safe_load(run_yaml.read_text())
    fn(data)
    run_yaml.write_text(yaml.safe_dump(data, sort_keys=False))


def cci_file(world: Path, day: str = DAY) -> Path:
    return next((world / "inputs" / "cci").glob(f"*-{day}000000-*.nc"))


def era5_file(world: Path) -> Path:
    return sorted((world / "inputs" / "era5").glob("*.nc"))[0]


def ismn_file(world: Path) -> Path:
    return sorted((world / "inputs" / "ismn").rglob("*_sm_0.000000_0.050000_*.stm"))[0]


def _rewrite_nc(path: Path, fn) -> None:
    """Apply ``fn`` to the raw (undecoded) dataset of a netCDF file and write it back in place."""
    import xarray as xr

    with xr.open_dataset(path, decode_cf=False, mask_and_scale=False, decode_times=False) as ds:
        ds = ds.load()
    ds = fn(ds)
    for v in ds.variables.values():
        v.encoding = {}
    tmp = path.with_suffix(".tmp.nc")
    ds.to_netcdf(tmp)
    os.replace(tmp, path)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _raster_edit(path: Path, fn) -> None:
    import rasterio

    with rasterio.open(path) as src:
        profile = src.profile
        data = src.read(1)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(fn(data), 1)


def train_fake_model(cfg) -> str:
    """A small real booster on the real feature schema at ``cfg.model_path`` (train is slow)."""
    import xgboost as xgb

    from sm1km.core.features import FEATURE_NAMES
    from sm1km.storage.model import QUANTILES, save_model

    rng = np.random.default_rng(0)
    X = rng.random((300, len(FEATURE_NAMES)), dtype=np.float32)
    y = 0.1 + 0.3 * X[:, 0]
    d = xgb.DMatrix(X, label=y, feature_names=list(FEATURE_NAMES))
    b = xgb.train({"max_depth": 3, "nthread": 1, "seed": 0}, d, num_boost_round=5)
    q = xgb.train({"objective": "reg:quantileerror", "quantile_alpha": np.array(QUANTILES), "max_depth": 2,
                   "nthread": 1, "seed": 0}, d, num_boost_round=5)
    save_model(cfg.model_path, b, {"algorithm": "gbt", "target_kind": "sm"}, uncertainty_booster=q,
               storage_options=cfg.store.storage_options())
    return cfg.model_path


# --------------------------------------------------------------------------------------------
# damage functions: edit the world copy, return the names the message must contain
# --------------------------------------------------------------------------------------------
def cci_truncated(w: Path):
    _truncate(cci_file(w))
    return [cci_file(w).name]


def cci_not_netcdf(w: Path):
    """A failed download that saved the server's error page under the file's name."""
    cci_file(w).write_text("<html><head><title>503 Service Unavailable</title></head>\n"
                           "<body>The server is busy. Please retry later.</body></html>\n")
    return [cci_file(w).name]


def cci_wrong_variable(w: Path):
    _rewrite_nc(cci_file(w), lambda ds: ds.rename_vars(sm="soil_moisture"))
    return [cci_file(w).name]


def cci_mixed_versions(w: Path):
    """One day's file from another product version in the same folder (a second download)."""
    f = cci_file(w)
    other = f.with_name(f.name.replace(f.name.split("-fv")[1].split(".nc")[0], "99.9"))
    f.rename(other)
    return [other.name, "v99.9"]


def cci_c3s_dekadal(w: Path):
    """A C3S dekadal-means file in the daily folder."""
    f = cci_file(w)
    name = "C3S-SOILMOISTURE-L3S-SSMV-COMBINED-DEKADAL-20200401000000-ICDR-v202212.0.0.nc"
    shutil.copy(f, f.with_name(name))
    return [name, "DEKADAL"]


def cci_wrong_units(w: Path):
    def fn(ds):
        ds["sm"].attrs["units"] = "kg m-2"
        return ds
    _rewrite_nc(cci_file(w), fn)
    return [cci_file(w).name, "kg m-2"]


def cci_wrong_grid(w: Path):
    """Cell edges instead of centres (lon shifted by 0.125°)."""
    _rewrite_nc(cci_file(w), lambda ds: ds.assign_coords(lon=ds["lon"] + np.float32(0.125)))
    return [cci_file(w).name]


def cci_wrong_resolution(w: Path):
    """Every other cell: a 0.5° product passed as 0.25° CCI."""
    _rewrite_nc(cci_file(w), lambda ds: ds.isel(lat=slice(None, None, 2), lon=slice(None, None, 2)))
    return [cci_file(w).name]


def cci_duplicate_day(w: Path):
    """Two product versions of one day in the glob."""
    src = cci_file(w)
    shutil.copy(src, src.with_name(src.name.replace("fv08.1", "fv07.1")))
    return [src.name.replace("fv08.1", "fv07.1"), "2020-04-05"]


def cci_missing_day(w: Path):
    """The period is extended by a day for which no CCI (nor ERA5) file exists."""
    edit_config(w / "run.yaml", lambda d: d["period"].update(end="2020-04-11"))
    return ["cci", "2020-04-11"]


def cci_all_nan_day(w: Path):
    def fn(ds):
        ds["sm"][:] = ds["sm"].attrs["_FillValue"]
        return ds
    _rewrite_nc(cci_file(w), fn)
    return [cci_file(w).name]


def cci_date_mismatch(w: Path):
    """The time variable says another day than the file name."""
    def fn(ds):
        ds["time"] = ds["time"] + 1.0
        return ds
    _rewrite_nc(cci_file(w), fn)
    return [cci_file(w).name, "2020-04-05", "2020-04-06"]


def cci_lon_0_360(w: Path):
    """Accepted: the same data with longitudes 0..360 (sorted as such): the store must not change."""
    for f in sorted((w / "inputs" / "cci").glob("*.nc")):
        _rewrite_nc(f, lambda ds: ds.assign_coords(lon=ds["lon"] % np.float32(360)).sortby("lon"))
    return []


def era5_truncated(w: Path):
    _truncate(era5_file(w))
    return [era5_file(w).name]


def era5_wrong_variable(w: Path):
    _rewrite_nc(era5_file(w), lambda ds: ds.rename_vars(swvl1="swvl2"))
    return [era5_file(w).name, "swvl1"]


def era5_wrong_units(w: Path):
    def fn(ds):
        ds["swvl1"].attrs["units"] = "K"
        return ds
    _rewrite_nc(era5_file(w), fn)
    return [era5_file(w).name, "'K'"]


def era5_all_nan_day(w: Path):
    """Every hour of 2020-04-05 is missing."""
    def fn(ds):
        t = ds["time"].values  # hours since 1900-01-01
        day = (np.datetime64("2020-04-05") - np.datetime64("1900-01-01")).astype("timedelta64[h]").astype(int)
        sel = (t >= day) & (t < day + 24)
        v = ds["swvl1"].values.copy()
        v[sel] = ds["swvl1"].attrs["_FillValue"]
        ds["swvl1"].values = v
        return ds
    _rewrite_nc(era5_file(w), fn)
    return [era5_file(w).name, "2020-04-05"]


def era5_lon_0_360(w: Path):
    """Accepted: ERA5 as the CDS delivers global files, longitudes 0..360."""
    _rewrite_nc(era5_file(w), lambda ds: ds.assign_coords(longitude=ds["longitude"] % np.float32(360))
                .sortby("longitude"))
    return []


def ismn_garbage_lines(w: Path):
    f = ismn_file(w)
    lines = f.read_text().splitlines()
    lines.insert(50, "#### <html> proxy error: connection reset ####")
    f.write_text("\n".join(lines) + "\n")
    return [f.name, "line 51"]


def ismn_unknown_flag(w: Path):
    f = ismn_file(w)
    lines = f.read_text().splitlines()
    lines[20] = lines[20].replace(" G ", " Q ")
    f.write_text("\n".join(lines) + "\n")
    return ["AGRINET/AG01", "--overwrite"]


def ismn_wrong_encoding(w: Path):
    f = ismn_file(w)
    f.write_bytes(f.read_text().encode("utf-16"))
    return [f.name, "UTF-16"]


def ismn_station_outside(w: Path):
    """Accepted: a station outside the region is kept with in_region = false and a warning."""
    src = ismn_file(w)
    lines = src.read_text().splitlines()
    head = lines[0].split()
    head[2], head[3], head[4] = "FARAWAY", "10.50000", "-60.00000"
    far = src.parent.parent / "FARAWAY"
    far.mkdir()
    name = src.name.replace(f"_{src.parent.name}_", "_FARAWAY_")
    (far / name).write_text("\n".join([" ".join(head)] + lines[1:]) + "\n")
    return ["FARAWAY", "outside the region"]


def raster_corrupt(w: Path):
    f = w / "inputs" / "predictors" / f"lst_day_{DAY}.tif"
    f.write_bytes(b"II*\x00" + bytes(range(256)) * 4)
    return [f.name]


def raster_truncated_static(w: Path):
    f = w / "inputs" / "predictors" / "elevation.tif"
    _truncate(f)
    return [f.name]


def raster_celsius(w: Path):
    """LST in degrees Celsius instead of kelvin."""
    f = w / "inputs" / "predictors" / f"lst_day_{DAY}.tif"
    _raster_edit(f, lambda a: np.where(np.isfinite(a), a - 273.15, a).astype(a.dtype))
    return [f.name, "lst_day"]


def store_corrupt_metadata(w: Path):
    """inputs/cci.zarr's root metadata overwritten with garbage (a torn copy)."""
    (w / "store" / "inputs" / "cci.zarr" / "zarr.json").write_bytes(b'{"zarr_format": 3, "node_ty')
    return ["cci.zarr"]


def model_schema_mismatch(w: Path):
    import json

    card = w / "store" / "model" / "model.json"
    data = json.loads(card.read_text())
    data["feature_schema"]["names"][3] = "lst_day_c"
    card.write_text(json.dumps(data, indent=2))
    return ["model.ubj", "feature schema", "lst_day_c"]


def model_hash_mismatch(w: Path):
    f = w / "store" / "model" / "model.ubj"
    raw = bytearray(f.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    f.write_bytes(bytes(raw))
    return ["model.ubj", "sha256"]


def model_missing(w: Path):
    shutil.rmtree(w / "store" / "model")
    return ["model"]


def config_unknown_key(w: Path):
    edit_config(w / "run.yaml", lambda d: d.setdefault("fusion", {}).update(methd="cdf"))
    return ["run.yaml", "fusion.methd"]


def config_invalid_bbox(w: Path):
    edit_config(w / "run.yaml", lambda d: d["region"].update(west=1.0, east=-1.0))
    return ["run.yaml", "region", "west"]


def config_period_reversed(w: Path):
    edit_config(w / "run.yaml", lambda d: d["period"].update(start="2020-04-10", end="2020-04-01"))
    return ["run.yaml", "period"]


def config_not_yaml(w: Path):
    (w / "run.yaml").write_text("region: [west: 0\nperiod: {start: 2020-04-01\n")
    return ["run.yaml"]


def config_secret(w: Path):
    """A secret pasted into the config: refused, and never echoed."""
    edit_config(w / "run.yaml", lambda d: d["store"].update(
        client_kwargs={"aws_secret_access_key": "planted-config-secret-0042"}))
    return ["run.yaml", "aws_secret_access_key"]


def s3_missing_bucket(w: Path, endpoint: str):
    edit_config(w / "run.yaml", lambda d: d["store"].update(root=f"s3://{S3_NO_BUCKET}/run", endpoint_url=endpoint))
    return [S3_NO_BUCKET]


# -- [14] corpus extension: revised/partial ERA5, bad GRIB and grids, out-of-range CCI, file-name dates,
# rasters elsewhere, damaged ISMN archives and headers, a future period, a damaged master --------------

def era5_partial_day(w: Path):
    """ERA5 of the last day only half there (a download cut off, or ERA5T not yet complete)."""
    def fn(ds):
        t = ds["time"].values
        last = (np.datetime64("2020-04-10T12") - np.datetime64("1900-01-01")).astype("timedelta64[h]").astype(int)
        return ds.isel(time=np.nonzero(t < last)[0])
    _rewrite_nc(era5_file(w), fn)
    return [era5_file(w).name, "2020-04-10"]


def era5_revised_day(w: Path):
    """ERA5T replaced by final ERA5 for a stored day (values differ): refused without --overwrite."""
    def fn(ds):
        t = ds["time"].values
        day = (np.datetime64("2020-04-05") - np.datetime64("1900-01-01")).astype("timedelta64[h]").astype(int)
        sel = (t >= day) & (t < day + 24)
        v = ds["swvl1"].values.copy()
        fill = ds["swvl1"].attrs.get("_FillValue")
        ok = v != fill if fill is not None else np.ones(v.shape, bool)
        bump = np.zeros_like(v)
        bump[sel] = 40
        v = np.where(ok, v + bump, v)
        ds["swvl1"].values = v.astype(ds["swvl1"].dtype)
        return ds
    _rewrite_nc(era5_file(w), fn)
    return [era5_file(w).name, "--overwrite"]


def era5_bad_grib(w: Path):
    """A GRIB download that is not GRIB (the start of a GRIB message, then garbage)."""
    f = era5_file(w)
    g = f.with_suffix(".grib")
    g.write_bytes(b"GRIB" + bytes(range(256)) * 8)
    f.unlink()
    edit_config(w / "run.yaml", lambda d: d["inputs"].update(era5=str(w / "inputs" / "era5" / "*.grib")))
    return [g.name]


def era5_wrong_grid(w: Path):
    """ERA5 on a 0.1° grid (ERA5-Land passed as ERA5)."""
    def fn(ds):
        return ds.assign_coords(latitude=ds["latitude"] + np.float32(0.1), longitude=ds["longitude"] + np.float32(0.1))
    _rewrite_nc(era5_file(w), fn)
    return [era5_file(w).name]


def cci_out_of_range(w: Path):
    """Values of 1.7 m3/m3 (percent of saturation misread, or a corrupt scale)."""
    def fn(ds):
        v = ds["sm"].values.copy()
        fill = ds["sm"].attrs.get("_FillValue")
        ok = np.isfinite(v) & (v != fill) if fill is not None else np.isfinite(v)
        v[ok] = 1.7
        ds["sm"].values = v
        return ds
    _rewrite_nc(cci_file(w), fn)
    return [cci_file(w).name]


def cci_malformed_date(w: Path):
    """A file name with an impossible date (20201345) in the glob."""
    f = cci_file(w)
    bad = f.with_name(f.name.replace(f"-{DAY}000000-", "-20201345000000-"))
    shutil.copy(f, bad)
    return [bad.name]


def raster_wrong_crs(w: Path):
    """A daily LST GeoTIFF in Web Mercator metres that does not cover the region."""
    import rasterio
    from rasterio.transform import from_origin

    f = w / "inputs" / "predictors" / f"lst_day_{DAY}.tif"
    with rasterio.open(f) as src:
        profile = src.profile
        data = src.read(1)
    profile.update(crs="EPSG:3857", transform=from_origin(5_000_000, 5_000_000, 1000, 1000))
    with rasterio.open(f, "w", **profile) as dst:
        dst.write(data, 1)
    return [f.name]


def raster_not_covering(w: Path):
    """A static raster of another area (shifted by 5°): does not cover the region."""
    import rasterio
    from rasterio.transform import Affine

    f = w / "inputs" / "predictors" / "clay.tif"
    with rasterio.open(f) as src:
        profile = src.profile
        data = src.read(1)
    t = profile["transform"]
    profile.update(transform=Affine(t.a, t.b, t.c + 5.0, t.d, t.e, t.f + 5.0))
    with rasterio.open(f, "w", **profile) as dst:
        dst.write(data, 1)
    return [f.name]


def ismn_empty_zip(w: Path):
    """The ISMN download is an empty zip archive."""
    z = w / "inputs" / "ismn.zip"
    with zipfile.ZipFile(z, "w"):
        pass
    edit_config(w / "run.yaml", lambda d: d["inputs"].update(ismn=str(z)))
    return ["ismn.zip"]


def ismn_corrupt_zip(w: Path):
    """The ISMN download cut off half-way (a truncated zip)."""
    z = w / "inputs" / "ismn.zip"
    src = w / "inputs" / "ismn"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(src.rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(src))
    data = z.read_bytes()
    z.write_bytes(data[: len(data) // 2])
    edit_config(w / "run.yaml", lambda d: d["inputs"].update(ismn=str(z)))
    return ["ismn.zip"]


def ismn_nan_coordinates(w: Path):
    """A station header whose latitude is 'nan'."""
    f = ismn_file(w)
    lines = f.read_text().splitlines()
    head = lines[0].split()
    head[3] = "nan"
    lines[0] = " ".join(head)
    f.write_text("\n".join(lines) + "\n")
    return [f.name, "lat nan"]


def period_in_future(w: Path):
    """period.end after today (a typo, or a cron job that asks for tomorrow)."""
    end = dt.date.today() + dt.timedelta(days=30)
    edit_config(w / "run.yaml", lambda d: d["period"].update(end=end.isoformat()))
    return ["period.end", end.isoformat()]


def _downscaled(w: Path) -> None:
    from sm1km.cli import main
    assert main(["downscale", "--config", str(w / "run.yaml")]) == 0


def master_truncated_shard(w: Path):
    """A master shard cut short (a copy interrupted, a disk that filled up)."""
    _downscaled(w)
    shard = sorted((w / "store" / "master.zarr" / "sm" / "c").rglob("*"))
    shard = [p for p in shard if p.is_file()][0]
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 3])
    return ["master.zarr", "sm/c/0/0/0", "_ledger/master.zarr/", "sm1km downscale"]


CASES: list[BadCase] = [
    BadCase("cci-truncated", "ingest", cci_truncated, ("truncated or corrupt",)),
    BadCase("cci-not-netcdf", "ingest", cci_not_netcdf, ("text file, not a netCDF",)),
    BadCase("cci-wrong-variable", "ingest", cci_wrong_variable, ("no variable 'sm'",)),
    BadCase("cci-wrong-units", "ingest", cci_wrong_units, ("units",)),
    BadCase("cci-mixed-versions", "ingest", cci_mixed_versions, ("mixes product versions",)),
    BadCase("cci-c3s-dekadal", "ingest", cci_c3s_dekadal, ("needs daily values",)),
    BadCase("cci-wrong-grid", "ingest", cci_wrong_grid, ("0.25° CCI cell centres",)),
    BadCase("cci-wrong-resolution", "ingest", cci_wrong_resolution, ("spacing is 0.5°",)),
    BadCase("cci-duplicate-day", "ingest", cci_duplicate_day, ("duplicate day",)),
    BadCase("cci-missing-day", "ingest", cci_missing_day, ("no CCI file for 1 day",)),
    BadCase("cci-all-nan-day", "ingest", cci_all_nan_day, ("all-missing day",)),
    BadCase("cci-date-mismatch", "ingest", cci_date_mismatch, ("time variable says",)),
    BadCase("cci-lon-0-360", "ingest", cci_lon_0_360, (), exit_code=0),
    BadCase("era5-truncated", "ingest", era5_truncated, ("it is truncated",)),
    BadCase("era5-wrong-variable", "ingest", era5_wrong_variable, ("no variable 'swvl1'",)),
    BadCase("era5-wrong-units", "ingest", era5_wrong_units, ("expected m3 m-3",)),
    BadCase("era5-all-nan-day", "ingest", era5_all_nan_day, ("all-missing day",)),
    BadCase("era5-lon-0-360", "ingest", era5_lon_0_360, (), exit_code=0),
    BadCase("ismn-garbage-lines", "ingest", ismn_garbage_lines, ("cannot parse",)),
    # an unknown flag drops that value only ([15]); the station's series changes, so the stored one is
    # not silently replaced
    BadCase("ismn-unknown-flag", "ingest", ismn_unknown_flag, ("differ from",)),
    BadCase("ismn-wrong-encoding", "ingest", ismn_wrong_encoding, ("not plain text",)),
    BadCase("ismn-station-outside", "ingest", ismn_station_outside, (), exit_code=0),
    BadCase("raster-corrupt", "ingest", raster_corrupt, ("corrupt",)),
    BadCase("raster-truncated-static", "ingest", raster_truncated_static, ("corrupt",)),
    BadCase("raster-celsius", "ingest", raster_celsius, ("outside the plausible range",)),
    BadCase("store-corrupt-metadata", "fuse", store_corrupt_metadata, ("cannot open",)),
    BadCase("model-schema-mismatch", "downscale", model_schema_mismatch, ("does not match",), needs="model"),
    BadCase("model-hash-mismatch", "downscale", model_hash_mismatch, ("corrupt or was modified",), needs="model"),
    BadCase("model-missing", "downscale", model_missing, ("not found",), needs="model"),
    BadCase("config-unknown-key", "ingest", config_unknown_key, ("unknown key",)),
    BadCase("config-invalid-bbox", "ingest", config_invalid_bbox, ("must be less than",)),
    BadCase("config-period-reversed", "ingest", config_period_reversed, ("before start",)),
    BadCase("config-not-yaml", "ingest", config_not_yaml, ("not valid YAML",)),
    BadCase("config-secret", "ingest", config_secret, ("not allowed in the config",)),
    BadCase("s3-missing-bucket", "ingest", s3_missing_bucket, ("does not exist",), needs="s3"),
    BadCase("era5-partial-day", "ingest", era5_partial_day, ("is incomplete", "12 of 24")),
    BadCase("era5-revised-day", "ingest", era5_revised_day, ("differs from",)),
    BadCase("era5-bad-grib", "ingest", era5_bad_grib, ("cannot read GRIB",)),
    BadCase("era5-wrong-grid", "ingest", era5_wrong_grid, ("off the native 0.25° grid",)),
    BadCase("cci-out-of-range", "ingest", cci_out_of_range, ("outside the file's valid range",)),
    BadCase("cci-malformed-date", "ingest", cci_malformed_date, ("not a calendar day",)),
    BadCase("raster-wrong-crs", "ingest", raster_wrong_crs, ("does not overlap the region",)),
    BadCase("raster-not-covering", "ingest", raster_not_covering, ("does not overlap the region",)),
    BadCase("ismn-empty-zip", "ingest", ismn_empty_zip, ("holds no ISMN .stm file",)),
    BadCase("ismn-corrupt-zip", "ingest", ismn_corrupt_zip, ("corrupt zip archive",)),
    BadCase("ismn-nan-coordinates", "ingest", ismn_nan_coordinates, ("coordinates out of range",)),
    BadCase("period-in-future", "ingest", period_in_future, ("is in the future",)),
    BadCase("master-truncated-shard", "aggregate", master_truncated_shard, ("the store is damaged",),
            needs="model", keeps="existing"),
]


def by_name(name: str) -> BadCase:
    return next(c for c in CASES if c.name == name)
