"""``sm1km ingest`` on the tiny synthetic world: the store contract, idempotency, appends, the
"differs" rule and bad-input atomicity — one suite over a local path and S3 (moto server)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from sm1km.config import RunConfig
from sm1km.core.gapfill import gapfill_time
from sm1km.errors import InputError, StoreError
from sm1km.stages.ingest import COARSE_TIME_CHUNK, GAP_HALO_DAYS, ingest
from sm1km.stages.ingest.predictor_tasks import FALLBACK_DAYS
from sm1km.storage import store
from sm1km.storage.deps import input_day_digests, input_static_digest

N_DAYS = 14
START = "2020-04-01"
END = "2020-04-14"
MID = "2020-04-07"
CCI_NAME = "ESACCI-SOILMOISTURE-L3S-SSMV-COMBINED-{}000000-fv08.1.nc"
PREDICTOR_KEYS = ("lst_day", "lst_night", "ndvi", "elevation", "slope", "twi", "clay", "sand", "land_cover")
AWS_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """The synthetic tiny world (1°×1°, factor 10, 14 days), written once per session."""
    from sm1km.synth import preset, write_world

    return write_world(tmp_path_factory.mktemp("ingest-world") / "world", preset("tiny", n_days=N_DAYS), seed=11)


@pytest.fixture
def inputs(tiny_world, tmp_path) -> Path:
    """A private copy of the world's input files (tests damage them)."""
    dst = tmp_path / "inputs"
    shutil.copytree(tiny_world.inputs, dst)
    return dst


@pytest.fixture
def no_aws_env(monkeypatch):
    """Local-only tests drop the dummy S3 credentials: with credentials in the environment rasterio
    builds a boto3 session for every warp (~0.1 s per GeoTIFF read)."""
    for k in AWS_VARS:
        monkeypatch.delenv(k, raising=False)


def make_cfg(world, inputs: Path, root: str, so: dict, start=START, end=END, only=None) -> RunConfig:
    """The world's run.yaml on a copy of its inputs, a store root, a period; ``only``: inputs kept."""
    data = yaml.safe_load(Path(world.run_yaml).read_text())

    def moved(key, v):
        if v is None or (only is not None and key not in only):
            return None
        return str(inputs / Path(v).relative_to("inputs"))

    for k in ("cci", "era5", "ismn"):
        data["inputs"][k] = moved(k, data["inputs"][k])
    data["inputs"]["era5_lsm"] = moved("era5", data["inputs"]["era5_lsm"])
    data["inputs"]["predictors"] = {k: moved(k, v) for k, v in data["inputs"]["predictors"].items()}
    data["inputs"]["truth"] = None
    data["period"] = {"start": start, "end": end}
    data["store"] = {"root": root, **({"endpoint_url": so["endpoint_url"]} if so else {})}
    data["cluster"] = {"kind": "synchronous"}
    return RunConfig.from_dict(data)


@pytest.fixture(scope="session")
def full_local(tiny_world, tmp_path_factory):
    """All inputs, whole period, ingested once into a local store (read-only for the tests)."""
    base = tmp_path_factory.mktemp("ingest-full")
    inp = base / "inputs"
    shutil.copytree(tiny_world.inputs, inp)
    cfg = make_cfg(tiny_world, inp, str(base / "store"), {})
    with pytest.MonkeyPatch.context() as mp:
        for k in AWS_VARS:
            mp.delenv(k, raising=False)
        ingest(cfg)
    return cfg, inp


def cci_file(inputs: Path, day: str) -> Path:
    return inputs / "cci" / CCI_NAME.format(day.replace("-", ""))


def tree(cfg) -> dict:
    return store.checksum_tree(cfg.store.root, cfg.store.storage_options())


def open_(cfg, name, **kw):
    return store.open_dataset(cfg.store.url("inputs", name), cfg.store.storage_options(), **kw).load()


# ------------------------------------------------------------------------------------------------
@pytest.mark.slow  # ~20 s on S3 (moto), ~3 s locally
def test_ingest_writes_the_store_contract(tiny_world, inputs, store_root, monkeypatch):
    root, so = store_root
    if not so:
        for k in AWS_VARS:
            monkeypatch.delenv(k, raising=False)
    # on S3 (dummy credentials in the environment make each GeoTIFF read slow) fewer predictors
    dyn = ("lst_day", "lst_night", "ndvi") if not so else ("lst_day",)
    sta = ("elevation", "slope", "twi", "clay", "sand", "land_cover") if not so else ("clay", "land_cover")
    cfg = make_cfg(tiny_world, inputs, root, so, only=("cci", "era5", "ismn") + dyn + sta)
    urls = ingest(cfg)
    assert set(urls) == {"inputs/cci.zarr", "inputs/era5.zarr", "inputs/predictors.zarr", "inputs/stations.zarr"}
    assert urls["inputs/cci.zarr"] == cfg.store.url("inputs", "cci.zarr")
    reg = cfg.coarse_region
    days = pd.date_range(START, END, freq="D")

    cci = open_(cfg, "cci.zarr", consolidated=True)  # consolidated metadata written last
    assert dict(cci.sizes) == {"time": N_DAYS, "lat": reg.n_rows, "lon": reg.n_cols}
    assert (cci.time.values == days.values).all()
    assert (np.diff(cci.lat.values) < 0).all() and (np.diff(cci.lon.values) > 0).all()
    assert cci.sm.dtype == np.float32 and cci.flag.dtype == np.int16 and cci.sm_uncertainty.dtype == np.float32
    assert cci.sm.encoding["chunks"] == (COARSE_TIME_CHUNK, reg.n_rows, reg.n_cols)
    assert cci.sm.attrs["standard_name"] == "volume_fraction_of_condensed_water_in_soil"
    assert cci.sm.attrs["units"] == "m3 m-3"
    assert cci.attrs["time_coverage_start"] == START and cci.attrs["time_coverage_end"] == END
    from sm1km.storage.readers import read_cci_day

    day = read_cci_day(cci_file(inputs, "2020-04-05"), reg)
    np.testing.assert_array_equal(cci.sm.sel(time="2020-04-05").values, day.sm.values[0])
    np.testing.assert_array_equal(cci.flag.sel(time="2020-04-05").values, day.flag.values[0])
    files = {f["name"]: f["sha256"] for f in json.loads(cci.attrs["input_files"])}
    assert len(files) == N_DAYS
    f5 = cci_file(inputs, "2020-04-05")
    assert files[f5.name] == hashlib.sha256(f5.read_bytes()).hexdigest()

    era5 = open_(cfg, "era5.zarr")
    assert era5.swvl1.dims == ("time", "lat", "lon") and era5.land_fraction.dims == ("lat", "lon")
    assert np.isfinite(era5.swvl1.values).any() and float(era5.land_fraction.max()) <= 1.0
    assert era5.swvl1.attrs["standard_name"] == "volume_fraction_of_condensed_water_in_soil"
    assert "era5_lsm.nc" in era5.attrs["input_files"]

    pred = open_(cfg, "predictors.zarr")
    f = cfg.grid.factor
    assert dict(pred.sizes) == {"time": N_DAYS, "lat": reg.n_rows * f, "lon": reg.n_cols * f}
    names = {"lst_day": "lst_day_k", "lst_night": "lst_night_k", "ndvi": "ndvi", "elevation": "elevation_m",
             "slope": "slope_deg", "twi": "twi", "clay": "clay_frac", "sand": "sand_frac", "land_cover": "land_cover"}
    assert set(pred.data_vars) == {names[k] for k in dyn + sta} | {"observed_flags"}
    for k in dyn:
        v = names[k]
        assert pred[v].dims == ("time", "lat", "lon") and pred[v].dtype == np.float32
        assert np.isfinite(pred[v].values).all()
    for k in sta:
        assert pred[names[k]].dims == ("lat", "lon")
    assert pred.land_cover.dtype == np.int16
    assert 0 < float(np.nanmax(pred.clay_frac.values)) <= 1.0  # percent in the GeoTIFF -> fraction
    tile = min(cfg.grid.tile_cells * f, reg.n_rows * f)
    assert pred.lst_day_k.encoding["chunks"] == (cfg.grid.time_block_days, tile, tile)
    assert pred.lst_day_k.attrs["units"] == "K"

    st = open_(cfg, "stations.zarr")
    assert st.sm.dims == ("station", "time") and st.n_hours.dtype == np.int16
    assert (st.time.values == days.values).all()
    assert st.in_region.values.all()
    for c in ("network", "station_name", "lat", "lon", "depth_from", "depth_to", "sensor"):
        assert c in st.coords
    assert (st.depth_to.values <= 0.05).all() and np.isfinite(st.sm.values).any()


def test_dynamic_predictors_are_gap_filled_in_time(full_local, no_aws_env):
    """The causal rule (carry forward, trailing mean), recorded in the attrs; the NDVI composite
    dated before the period (its 16 days overlap the first days) is read as the lead-in."""
    cfg, inp = full_local
    pred = open_(cfg, "predictors.zarr")
    assert pred.attrs["gapfill_rule"] == "causal-locf"
    assert pred.attrs["gapfill_max_gap_days"] == GAP_HALO_DAYS == 48
    assert pred.attrs["gapfill_fallback_days"] == FALLBACK_DAYS
    from sm1km.storage.readers import read_raster

    raw = np.stack([read_raster(inp / "predictors" / f"lst_day_{d:%Y%m%d}.tif", cfg.coarse_region,
                                cfg.grid.factor).values for d in pd.date_range(START, END)])
    obs = np.isfinite(raw)
    assert 0 < obs.mean() < 1  # the world has cloud gaps
    stored = pred.lst_day_k.values
    np.testing.assert_array_equal(stored[obs], raw[obs])  # observations kept exactly
    np.testing.assert_array_equal((pred.observed_flags.values & 1).astype(bool), obs)
    tile = min(cfg.grid.tile_cells * cfg.grid.factor, raw.shape[1])
    for r in range(0, raw.shape[1], tile):  # the tile's trailing mean is per store tile
        for c in range(0, raw.shape[2], tile):
            want = gapfill_time(raw[:, r:r + tile, c:c + tile], max_gap_days=GAP_HALO_DAYS, fallback_days=FALLBACK_DAYS)
            np.testing.assert_array_equal(stored[:, r:r + tile, c:c + tile], want)
    # NDVI: 16-day composites on their dates, each held until the next one
    ndvi_obs = (pred.observed_flags.values & 4).any(axis=(1, 2))
    dates = [pd.Timestamp(p.stem.split("_")[1]) for p in sorted((inp / "predictors").glob("ndvi_*.tif"))]
    assert set(pd.DatetimeIndex(pred.time.values)[ndvi_obs]) == {d for d in dates if START <= str(d.date()) <= END}
    assert dates[0] < pd.Timestamp(START)  # the lead-in composite
    assert np.isfinite(pred.ndvi.values).all() and (np.abs(pred.ndvi.values) <= 1).all()
    first = read_raster(inp / "predictors" / f"ndvi_{dates[0]:%Y%m%d}.tif", cfg.coarse_region, cfg.grid.factor,
                        integer_scale=1e-4).values
    k = int((dates[1] - pd.Timestamp(START)).days)  # days before the first composite of the period
    ok = np.isfinite(first)
    for t in range(k):
        np.testing.assert_array_equal(pred.ndvi.values[t][ok], first[ok].astype(np.float32))


@pytest.mark.slow  # ~13 s on S3 (moto), ~3 s locally
def test_lifecycle_idempotent_append_differs_atomic(tiny_world, inputs, store_root, monkeypatch):
    """One store through its life: ingest, re-ingest (byte-identical), a changed stored day and a
    truncated new day (InputError naming both, store untouched), --overwrite, append, re-ingest."""
    import netCDF4

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    root, so = store_root
    only = ("cci", "era5")
    cfg7 = make_cfg(tiny_world, inputs, root, so, end=MID, only=only)
    ingest(cfg7)
    first = tree(cfg7)
    assert any(k.startswith("inputs/cci.zarr/") for k in first)
    assert any(k.startswith("_ledger/inputs/cci.zarr/") for k in first)
    ingest(cfg7)
    assert tree(cfg7) == first  # idempotent

    changed = cci_file(inputs, "2020-04-03")
    with netCDF4.Dataset(changed, "r+") as nc:
        sm = nc["sm"][:]
        sm[0, 1, 1] = 0.4321
        nc["sm"][:] = sm
    truncated = cci_file(inputs, "2020-04-12")
    good = truncated.read_bytes()
    truncated.write_bytes(good[: len(good) // 2])
    cfg = make_cfg(tiny_world, inputs, root, so, only=only)
    with pytest.raises(InputError) as err:
        ingest(cfg)
    msg = str(err.value)
    assert changed.name in msg and truncated.name in msg and "differs" in msg
    assert tree(cfg) == first  # atomic: nothing written

    truncated.write_bytes(good)
    with pytest.raises(InputError, match=changed.name):
        ingest(cfg)  # the changed day alone still refuses
    assert tree(cfg) == first
    ingest(cfg, overwrite=True)
    cci = open_(cfg, "cci.zarr", consolidated=True)
    assert cci.sizes["time"] == N_DAYS and cci.attrs["time_coverage_end"] == END
    assert cci.sm.sel(time="2020-04-03").values[1, 1] == np.float32(0.4321)
    assert cci.attrs["history"].count("sm1km ingest") == 2
    assert open_(cfg, "era5.zarr").sizes["time"] == N_DAYS
    after = tree(cfg)
    ingest(cfg)
    assert tree(cfg) == after


#: store attributes that say when/how often a store was written, not what it holds
VOLATILE_ATTRS = ("history", "date_created", "date_modified", "date_issued", "last_updated")


def comparable(ds) -> tuple[dict, dict]:
    """(store attrs without the write times/history, {coordinate: attrs})."""
    attrs = {k: v for k, v in ds.attrs.items() if k not in VOLATILE_ATTRS}
    if "sm1km_config" in attrs:  # the run's config, but for where its store lives
        attrs["sm1km_config"] = {k: v for k, v in json.loads(attrs["sm1km_config"]).items() if k != "store"}
    return attrs, {c: dict(ds[c].attrs) for c in ds.coords}


def assert_same_store(a, b, name):
    """Decoded data variables, the time coordinate (values, attrs, encoding) and the attributes."""
    assert set(a.data_vars) == set(b.data_vars), name
    for v in b.data_vars:
        np.testing.assert_array_equal(a[v].values, b[v].values, err_msg=f"{name}:{v}")
        assert a[v].attrs == b[v].attrs, f"{name}:{v}"
    if "time" in b.coords:
        np.testing.assert_array_equal(a["time"].values, b["time"].values, err_msg=f"{name}:time")
        assert not (a["time"].values < np.datetime64("2000-01-01")).any(), f"{name}: time {a['time'].values}"
        assert pd.DatetimeIndex(a["time"].values).is_monotonic_increasing
        for k in ("units", "calendar", "dtype"):
            assert a["time"].encoding.get(k) == b["time"].encoding.get(k), f"{name}:time {k}"
    ca, cb = comparable(a), comparable(b)
    for k in sorted(set(ca[0]) | set(cb[0])):
        assert ca[0].get(k) == cb[0].get(k), f"{name}: attribute {k}"
    assert ca[1] == cb[1], name


@pytest.mark.slow  # ~25 s on S3 (moto), ~5 s locally
def test_append_equals_a_one_shot_ingest(tiny_world, inputs, store_root, tmp_path, monkeypatch):
    """Days appended later (7 days, then 12, then 13, then 14) give the same stores as one ingest
    of the 14 days: data, the time coordinate (values and encoding, checked explicitly: an append
    once wrote 1970-01-01 for the new days) and the attributes (but history and write times)."""
    root, so = store_root
    if not so:
        for k in AWS_VARS:
            monkeypatch.delenv(k, raising=False)
    # on S3 fewer predictors (dummy credentials in the environment make each GeoTIFF read slow)
    only = ("cci", "era5", "ismn", "lst_day", "ndvi", "elevation") if so else None
    published: dict = {}
    for end in (MID, "2020-04-12", "2020-04-13", END):
        ingest(make_cfg(tiny_world, inputs, root, so, end=end, only=only))
        cfg = make_cfg(tiny_world, inputs, root, so, end=end, only=only)
        n = (np.datetime64(end) - np.datetime64(START)).astype(int) + 1
        for name in ("cci.zarr", "era5.zarr", "predictors.zarr", "stations.zarr"):
            ds = open_(cfg, name, consolidated=True)
            t = ds["time"].values
            np.testing.assert_array_equal(t, pd.date_range(START, end).values, err_msg=f"{name} after {end}")
            assert t.size == n
            for v, old in published.get(name, {}).items():  # a published day never changes
                np.testing.assert_array_equal(ds[v].isel(time=slice(0, old.shape[ds[v].dims.index("time")])).values,
                                              old, err_msg=f"{name}:{v} after {end}")
            published[name] = {v: ds[v].values for v in ds.data_vars if "time" in ds[v].dims}
    one = make_cfg(tiny_world, inputs, str(tmp_path / "one-shot"), {}, only=only)
    ingest(one)
    for name in ("cci.zarr", "era5.zarr", "predictors.zarr", "stations.zarr"):
        a, b = open_(cfg, name, consolidated=True), open_(one, name, consolidated=True)
        assert a.sizes["time"] == N_DAYS
        assert_same_store(a, b, name)
        # the per-day digests downstream stages depend on (storage.deps) are those of one shot too
        da = input_day_digests(cfg.store.root, f"inputs/{name}", so)
        assert da == input_day_digests(one.store.root, f"inputs/{name}") and sorted(da) == [
            str(d.date()) for d in pd.date_range(START, END)], name
        assert input_static_digest(cfg.store.root, f"inputs/{name}", so) == \
            input_static_digest(one.store.root, f"inputs/{name}") != "", name


def test_a_time_axis_corrupted_by_an_old_append_is_repaired(tiny_world, inputs, tmp_path, no_aws_env):
    """Stores appended before the fix read 1970-01-01 for the appended days: the next ingest
    rewrites their time coordinate (the data were right) and appends; the result equals one shot."""
    only = ("cci", "lst_day")
    root = str(tmp_path / "store")
    ingest(make_cfg(tiny_world, inputs, root, {}, end=MID, only=only))
    cfg = make_cfg(tiny_world, inputs, root, {}, only=only)
    for name in ("cci.zarr", "predictors.zarr"):  # what the old append left: zeros for days 5, 6
        g = store.open_group(cfg.store.url("inputs", name), {}, mode="r+", use_consolidated=False)
        t = store.array(g, "time")
        t[5:7] = np.zeros(2, dtype=t.dtype)
        assert str(open_(cfg, name)["time"].values[-1])[:10] == "1970-01-01"
    ingest(cfg)
    one = make_cfg(tiny_world, inputs, str(tmp_path / "one"), {}, only=only)
    ingest(one)
    for name in ("cci.zarr", "predictors.zarr"):
        a, b = open_(cfg, name, consolidated=True), open_(one, name, consolidated=True)
        np.testing.assert_array_equal(a["time"].values, pd.date_range(START, END).values, err_msg=name)
        assert_same_store(a, b, name)


def test_a_revised_day_changes_its_stored_digest_only(tiny_world, inputs, tmp_path, no_aws_env):
    """``--overwrite`` of a revised CCI day changes exactly that day's ``stored_days`` digest; a
    revised LST day changes that day's digest and perhaps later ones within the gap-fill's reach,
    never an earlier one (causal rule); a re-ingest without change keeps every digest."""
    import netCDF4

    from sm1km.storage.readers import read_raster

    only = ("cci", "lst_day", "elevation")
    cfg = make_cfg(tiny_world, inputs, str(tmp_path / "store"), {}, only=only)
    ingest(cfg)
    root = cfg.store.root
    before = {n: input_day_digests(root, f"inputs/{n}") for n in ("cci.zarr", "predictors.zarr")}
    static = input_static_digest(root, "inputs/predictors.zarr")
    assert len(before["cci.zarr"]) == len(before["predictors.zarr"]) == N_DAYS
    ingest(cfg)
    assert {n: input_day_digests(root, f"inputs/{n}") for n in before} == before
    with netCDF4.Dataset(cci_file(inputs, "2020-04-03"), "r+") as nc:
        sm = nc["sm"][:]
        sm[0, 1, 1] = 0.4321
        nc["sm"][:] = sm
    tif = inputs / "predictors" / "lst_day_20200405.tif"
    import rasterio

    with rasterio.open(tif, "r+") as r:
        band = r.read(1)
        band[band > 0] += 1.5
        r.write(band, 1)
    assert np.isfinite(read_raster(tif, cfg.coarse_region, cfg.grid.factor).values).any()
    ingest(cfg, overwrite=True)
    after = {n: input_day_digests(root, f"inputs/{n}") for n in before}
    assert [d for d in before["cci.zarr"] if before["cci.zarr"][d] != after["cci.zarr"][d]] == ["2020-04-03"]
    changed = [d for d in before["predictors.zarr"] if before["predictors.zarr"][d] != after["predictors.zarr"][d]]
    assert changed[0] == "2020-04-05" and all(d >= "2020-04-05" for d in changed)
    assert input_static_digest(root, "inputs/predictors.zarr") == static


def test_same_content_in_a_new_file_is_not_a_change(tiny_world, inputs, tmp_path):
    """A re-downloaded file with other bytes but the same data (here: a new history attribute)."""
    import netCDF4

    cfg = make_cfg(tiny_world, inputs, str(tmp_path / "store"), {}, end=MID, only=("cci",))
    ingest(cfg)
    sm_before = open_(cfg, "cci.zarr").sm.values
    with netCDF4.Dataset(cci_file(inputs, "2020-04-03"), "r+") as nc:
        nc.history = "re-downloaded"
    ingest(cfg)
    np.testing.assert_array_equal(open_(cfg, "cci.zarr").sm.values, sm_before)


# ------------------------------------------------------------------------------------------------
def _truncate(p: Path):
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])


def _rename_sm(p: Path):
    import netCDF4

    with netCDF4.Dataset(p, "r+") as nc:
        nc.renameVariable("sm", "soil_moisture")


def _shift_grid(p: Path):
    import netCDF4

    with netCDF4.Dataset(p, "r+") as nc:
        nc["lon"][:] = nc["lon"][:] + 0.1


def _all_missing(p: Path):
    import netCDF4

    with netCDF4.Dataset(p, "r+") as nc:
        nc["sm"][:] = np.full(nc["sm"].shape, -9999.0, dtype=np.float32)


def _garbage_tif(p: Path):
    p.write_bytes(b"II*\x00" + b"\x00" * 64)


def test_stats_count_the_units_written_and_skipped(tiny_world, inputs, tmp_path, no_aws_env):
    """``StageResult.stats``: units are days (0.25° cubes), time blocks + static rasters (predictors)
    and the table (stations); a re-run writes none, an append only the new days' units."""
    only = ("cci", "lst_day", "elevation", "ismn")
    root = str(tmp_path / "store")

    def per_store(res):
        return {k: (v["units_total"], v["units_written"], v["units_skipped"]) for k, v in res.stats["stores"].items()}

    first = ingest(make_cfg(tiny_world, inputs, root, {}, end=MID, only=only))
    assert per_store(first) == {"inputs/cci.zarr": (7, 7, 0), "inputs/predictors.zarr": (2, 2, 0),
                                "inputs/stations.zarr": (1, 1, 0)}  # 7 days; one 128-day block + elevation
    assert (first.stats["units_total"], first.stats["units_written"], first.stats["units_skipped"]) == (10, 10, 0)
    again = ingest(make_cfg(tiny_world, inputs, root, {}, end=MID, only=only))
    assert (again.stats["units_total"], again.stats["units_written"], again.stats["units_skipped"]) == (10, 0, 10)
    longer = ingest(make_cfg(tiny_world, inputs, root, {}, only=only))
    assert per_store(longer) == {"inputs/cci.zarr": (N_DAYS, N_DAYS - 7, 7), "inputs/predictors.zarr": (2, 1, 1),
                                 "inputs/stations.zarr": (1, 1, 0)}


def test_bad_inputs_are_input_errors_naming_each_file_and_leave_the_store(tiny_world, inputs, tmp_path, no_aws_env):
    """Truncated file, wrong variable, wrong grid, all-missing day, corrupt GeoTIFF — among the new
    days of an append: one InputError naming every bad file; the store is exactly as before."""
    only = ("cci", "lst_day")
    root = str(tmp_path / "store")
    ingest(make_cfg(tiny_world, inputs, root, {}, end=MID, only=only))
    cfg = make_cfg(tiny_world, inputs, root, {}, only=only)
    before = tree(cfg)
    bad = {"2020-04-08": _truncate, "2020-04-09": _rename_sm, "2020-04-10": _shift_grid, "2020-04-11": _all_missing}
    for day, damage in bad.items():
        damage(cci_file(inputs, day))
    tif = inputs / "predictors" / "lst_day_20200412.tif"
    _garbage_tif(tif)
    with pytest.raises(InputError) as err:
        ingest(cfg)
    msg = str(err.value)
    for day in bad:
        assert cci_file(inputs, day).name in msg, msg
    assert tif.name in msg
    assert "truncated or corrupt" in msg and "all-missing" in msg and "0.25" in msg
    assert tree(cfg) == before
    assert not (tmp_path / "store" / "_staging").exists()


def test_duplicate_and_missing_days_are_input_errors(tiny_world, inputs, tmp_path):
    root = str(tmp_path / "store")
    ingest(make_cfg(tiny_world, inputs, root, {}, end=MID, only=("cci",)))
    cfg = make_cfg(tiny_world, inputs, root, {}, only=("cci",))
    before = tree(cfg)
    dup = cci_file(inputs, "2020-04-09")
    shutil.copy(dup, dup.with_name(dup.name.replace("fv08.1", "fv07.1")))
    cci_file(inputs, "2020-04-11").unlink()
    with pytest.raises(InputError) as err:
        ingest(cfg)
    msg = str(err.value)
    assert "duplicate day 2020-04-09" in msg and "2020-04-11" in msg
    assert tree(cfg) == before
    # files of days already ingested may be gone: only days never ingested need a file
    cci_file(inputs, "2020-04-02").unlink()
    dup.with_name(dup.name.replace("fv08.1", "fv07.1")).unlink()
    shutil.copy(tiny_world.inputs / "cci" / cci_file(inputs, "2020-04-11").name, cci_file(inputs, "2020-04-11"))
    ingest(cfg)
    assert open_(cfg, "cci.zarr").sizes["time"] == N_DAYS


def test_period_starting_before_the_store_needs_overwrite(tiny_world, inputs, tmp_path):
    root = str(tmp_path / "store")
    ingest(make_cfg(tiny_world, inputs, root, {}, start="2020-04-03", end=MID, only=("cci",)))
    cfg = make_cfg(tiny_world, inputs, root, {}, end=MID, only=("cci",))
    before = tree(cfg)
    with pytest.raises(StoreError, match="starts"):
        ingest(cfg)
    assert tree(cfg) == before
    ingest(cfg, overwrite=True)
    assert str(open_(cfg, "cci.zarr").time.values[0])[:10] == START


def test_small_task_memory_gives_the_same_stores(tiny_world, full_local, tmp_path, no_aws_env):
    """Many small read tasks (bands and 1-2 day batches) write the same data and day digests."""
    one, inp = full_local
    cfg = make_cfg(tiny_world, inp, str(tmp_path / "b"), {}, only=("cci", "era5", "lst_day", "ndvi", "elevation"))
    ingest(cfg, task_memory_bytes=3000)
    ia_root = Path(one.store.root) / "_ledger" / "inputs"
    ib_root = tmp_path / "b" / "_ledger" / "inputs"
    for name, vars_ in (("cci.zarr", None), ("era5.zarr", None), ("predictors.zarr", ["lst_day_k", "ndvi", "elevation_m"])):
        x, y = open_(one, name), open_(cfg, name)
        for v in vars_ or list(x.data_vars):
            np.testing.assert_array_equal(x[v].values, y[v].values, err_msg=f"{name}:{v}")
        ia = json.loads((ia_root / name / "ingest-index.json").read_text())
        ib = json.loads((ib_root / name / "ingest-index.json").read_text())
        if name == "predictors.zarr":
            for k in ("lst_day", "ndvi"):
                assert ia["days"][k] == ib["days"][k]
            assert ia["static"]["elevation"] == ib["static"]["elevation"]
        else:
            assert ia == ib


def test_station_outside_the_region_is_kept_and_flagged(tiny_world, inputs, tmp_path, caplog):
    src = sorted((inputs / "ismn").rglob("*_sm_0.000000_0.050000_*.stm"))[0]
    lines = src.read_text().splitlines()
    head = lines[0].split()
    head[2] = "FARAWAY"
    head[3], head[4] = "10.50000", "-60.00000"
    far = inputs / "ismn" / head[0] / "FARAWAY"
    far.mkdir(parents=True)
    (far / src.name.replace(src.name.split("_")[2], "FARAWAY")).write_text("\n".join([" ".join(head)] + lines[1:]) + "\n")
    cfg = make_cfg(tiny_world, inputs, str(tmp_path / "store"), {}, only=("ismn",))
    with caplog.at_level("WARNING", logger="sm1km.stages.ingest"):
        ingest(cfg)
    st = open_(cfg, "stations.zarr")
    sid = f"{head[0]}/FARAWAY"
    assert sid in [str(s) for s in st.station.values]
    assert not bool(st.in_region.sel(station=sid))
    assert int(st.in_region.sum()) == st.sizes["station"] - 1
    assert sid in json.loads(st.attrs["stations_outside_region"])
    assert "outside the region" in caplog.text


def test_on_a_distributed_client(tiny_world, inputs, tmp_path, no_aws_env):
    """Tasks run on dask workers (threads here, to keep the test fast); input problems still come
    back as one InputError. Task functions pickle by reference, as worker processes need."""
    import pickle

    from distributed import Client, LocalCluster

    from sm1km.stages.ingest import coarse, predictors

    for fn in (coarse.read_coarse_band, predictors.read_predictor_band, predictors.write_predictor_block):
        assert pickle.loads(pickle.dumps(fn)) is fn
    only = ("cci", "lst_day", "elevation")
    cfg = make_cfg(tiny_world, inputs, str(tmp_path / "store"), {}, end=MID, only=only)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        ingest(cfg, client=client)
        ref = make_cfg(tiny_world, inputs, str(tmp_path / "ref"), {}, end=MID, only=only)
        ingest(ref)
        for name in ("cci.zarr", "predictors.zarr"):
            a, b = open_(cfg, name), open_(ref, name)
            for v in a.data_vars:
                np.testing.assert_array_equal(a[v].values, b[v].values)
        _truncate(cci_file(inputs, "2020-04-12"))
        before = tree(cfg)
        with pytest.raises(InputError, match="20200412"):
            ingest(make_cfg(tiny_world, inputs, str(tmp_path / "store"), {}, only=only), client=client)
        assert tree(cfg) == before


def test_cli(tiny_world, inputs, tmp_path, capsys):
    from sm1km.cli import main

    cfg = make_cfg(tiny_world, inputs, str(tmp_path / "store"), {}, end=MID, only=("cci",))
    run_yaml = tmp_path / "run.yaml"
    run_yaml.write_text(cfg.to_yaml())
    assert main(["ingest", "--config", str(run_yaml)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {"inputs/cci.zarr": cfg.store.url("inputs", "cci.zarr")}
    _truncate(cci_file(inputs, "2020-04-02"))
    cfg2 = make_cfg(tiny_world, inputs, str(tmp_path / "store2"), {}, end=MID, only=("cci",))
    run_yaml.write_text(cfg2.to_yaml())
    assert main(["ingest", "--config", str(run_yaml), "--overwrite"]) == 2
    assert "20200402" in capsys.readouterr().err
