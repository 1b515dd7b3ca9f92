"""The layout every ingest store shares: variables, coordinates, the time axis, attributes.

An input store is a Zarr v3 cube on the run's region (``lat``/``lon`` cell centres; a daily
``time`` axis in ``days since 1970-01-01``), created from a lazy template and then filled by region
writes. Appending days grows the time axis in place; a store that covers another grid, holds
other variables or starts after the period cannot be appended to (``--overwrite`` rebuilds it).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np
import xarray as xr

from sm1km.config import RunConfig
from sm1km.core import grid
from sm1km.errors import Sm1kmError, StoreError
from sm1km.storage import store

from .job import IngestContext

log = logging.getLogger(__name__)

#: time chunk of the 0.25° cubes: the whole period up to ~11 years in one chunk; fixed so that
#: appending days rewrites the same chunk instead of changing the chunk grid
COARSE_TIME_CHUNK = 4096
TIME_UNITS = "days since 1970-01-01"
EPOCH = np.datetime64("1970-01-01", "D")
SM_STANDARD_NAME = "volume_fraction_of_condensed_water_in_soil"

LATLON_ATTRS = {
    "lat": {"standard_name": "latitude", "long_name": "latitude of cell centre", "units": "degrees_north", "axis": "Y"},
    "lon": {"standard_name": "longitude", "long_name": "longitude of cell centre", "units": "degrees_east", "axis": "X"},
}
TIME_ATTRS = {"standard_name": "time", "long_name": "day (UTC)", "axis": "T"}


@dataclasses.dataclass(frozen=True)
class Var:
    """One variable of a store: name, dtype, attributes, the in-memory value of "nothing"."""

    name: str
    dtype: str
    attrs: dict
    fill: Any = np.nan  # value of "nothing" in memory (also the zarr fill for floats)


# --------------------------------------------------------------------------------------------
# days
# --------------------------------------------------------------------------------------------
def iso(d) -> str:
    return str(np.datetime64(d, "D"))


def day(s) -> np.datetime64:
    return np.datetime64(s, "D")


def axis(a0, a1) -> np.ndarray:
    """Every day from ``a0`` to ``a1`` (inclusive)."""
    return np.arange(day(a0), day(a1) + np.timedelta64(1, "D"), dtype="datetime64[D]")


def time_coord(days: np.ndarray) -> np.ndarray:
    return np.asarray(days, dtype="datetime64[D]").astype("datetime64[ns]")


def coord_arrays(region: grid.Region, factor: int | None):
    lat, lon = grid.region_coords(region, factor)
    return lat.astype(np.float64), lon.astype(np.float64)


# --------------------------------------------------------------------------------------------
# template, time axis, attributes
# --------------------------------------------------------------------------------------------
def _fill_value(dtype: str):
    return np.dtype(dtype).type(np.nan) if np.dtype(dtype).kind == "f" else None


def template(days: np.ndarray | None, lat, lon, tvars, svars, chunks_t, chunks_s, attrs) -> tuple[xr.Dataset, dict]:
    """Lazy (dask) template Dataset + encoding: time-dependent ``tvars``, static ``svars``."""
    import dask.array as dsa

    coords: dict[str, tuple] = {"lat": ("lat", lat, LATLON_ATTRS["lat"]), "lon": ("lon", lon, LATLON_ATTRS["lon"])}
    enc: dict[str, dict] = {"lat": {"_FillValue": None}, "lon": {"_FillValue": None}}
    data: dict[str, tuple] = {}
    if days is not None:
        coords["time"] = ("time", time_coord(days), TIME_ATTRS)
        enc["time"] = {"units": TIME_UNITS, "calendar": "proleptic_gregorian", "dtype": "int32",
                       "chunks": (max(COARSE_TIME_CHUNK, chunks_t[0]),)}
    for v in tvars:
        assert days is not None, "time-dependent variables need days"
        shape = (len(days), lat.size, lon.size)
        # one never-computed dask chunk (as master._lazy): a graph of one task per store chunk made
        # the global 1 km predictors template (millions of chunks) cost minutes and GBs on the driver
        data[v.name] = (("time", "lat", "lon"), dsa.empty(shape, dtype=v.dtype, chunks=shape), dict(v.attrs))
        enc[v.name] = {"chunks": chunks_t, "dtype": v.dtype, "_FillValue": _fill_value(v.dtype)}
    for v in svars:
        data[v.name] = (("lat", "lon"), dsa.empty((lat.size, lon.size), dtype=v.dtype, chunks=(lat.size, lon.size)),
                        dict(v.attrs))
        enc[v.name] = {"chunks": chunks_s, "dtype": v.dtype, "_FillValue": _fill_value(v.dtype)}
    return xr.Dataset(data, coords=coords, attrs=dict(attrs)), enc


def staging_var(tpl: xr.Dataset, enc: dict, name: str, dtype: str, shape: tuple, chunks: tuple) -> None:
    """Add a lazy ``(day, lat, lon)`` staging array ``name`` to a template."""
    import dask.array as dsa

    tpl[name] = (("day", "lat", "lon"), dsa.zeros(shape, dtype=dtype, chunks=chunks))
    enc[name] = {"chunks": chunks, "dtype": dtype, "_FillValue": _fill_value(dtype)}


def grow_time_axis(url: str, so, days: np.ndarray) -> None:
    """Grow every time-dependent array to ``len(days)`` and write the new time coordinate values.

    Through :func:`sm1km.storage.append.extend_time`, which resizes first and then writes the new
    values through a handle opened *after* the resize (a handle taken before it still has the old
    shape: zarr then writes only the old length and the new days read 1970-01-01). The days
    already stored must be the start of ``days``.
    """
    from sm1km.storage.append import extend_time

    g = store.open_group(url, so, mode="r", use_consolidated=False)
    tarr = store.array(g, "time")
    if tarr.attrs.get("units") != TIME_UNITS:
        raise StoreError(url, f"time units {tarr.attrs.get('units')!r} are not {TIME_UNITS!r}; this store was not "
                              "written by sm1km ingest.", "remove it, or ingest into another store.root.")
    n_old, n_new = extend_time(url, time_coord(days), so)
    if n_new != len(days):
        raise StoreError(url, f"the time axis grew to {n_new} days, not the {len(days)} of the ingest.",
                         "pass --overwrite to rebuild the store.")


def contiguous(stored: np.ndarray) -> bool:
    """True if ``stored`` (datetime64[D]) is its first day and the days after it, as ingest writes."""
    return stored.size == 0 or bool((stored == stored[0] + np.arange(stored.size).astype("timedelta64[D]")).all())


def time_repair_needed(ds: xr.Dataset | None) -> bool:
    """True for a store whose time coordinate is not consecutive days (see :func:`time_axis`)."""
    if ds is None or "time" not in ds.coords:
        return False
    return not contiguous(np.asarray(ds["time"].values, dtype="datetime64[D]"))


def rewrite_time(url: str, so, stored: np.ndarray) -> None:
    """Write the time values of the ``stored`` days (positions 0..) — the repair of :func:`time_axis`."""
    g = store.open_group(url, so, mode="r+", use_consolidated=False)
    store.array(g, "time")[: len(stored)] = (np.asarray(stored, dtype="datetime64[D]") - EPOCH).astype(np.int32)
    log.warning("%s: time coordinate of the %d stored days rewritten", url, len(stored))


def final_attrs(cfg: RunConfig, url: str, so, fresh: bool, title: str, summary: str, inputs: list[dict],
                days: np.ndarray | None, note: str, extra: dict | None = None) -> dict:
    """Final attributes: provenance (kept from creation on updates), history line, coverage."""
    new = store.provenance_attrs(cfg, title=title, summary=summary, inputs=inputs, extra=extra)
    if not fresh:
        old = dict(store.open_group(url, so, mode="r").attrs)
        new["date_created"] = old.get("date_created", new["date_created"])
        hist = str(old.get("history", ""))
        new["history"] = (hist + "\n" if hist else "") + f"{store.now_iso()} sm1km ingest: {note}"
    else:
        new["history"] = f"{store.now_iso()} sm1km ingest: {note}"
    if days is not None and len(days):
        new.update(store.coverage_attrs(time_coord(days)))
    else:
        new["last_updated"] = store.now_iso()
    return new


# --------------------------------------------------------------------------------------------
# the existing store
# --------------------------------------------------------------------------------------------
def existing_store(url: str, so) -> xr.Dataset | None:
    if not store.exists(url, so):
        return None
    return store.open_dataset(url, so, consolidated=False)


def unfinished(ds: xr.Dataset | None, index: dict | None, url: str) -> bool:
    """True for a store without its ingest index: the remains of a first ingest that was interrupted
    (the index is written last), to be created again from scratch."""
    if ds is None or index is not None:
        return False
    log.warning("%s: no ingest index: an earlier ingest was interrupted while creating this store; "
                "creating it again", url)
    return True


def check_layout(ds: xr.Dataset, url: str, lat, lon, names: set[str]) -> str | None:
    """Why an existing store cannot be appended to (None if it can)."""
    if ds.sizes.get("lat") != lat.size or ds.sizes.get("lon") != lon.size or \
            not np.allclose(ds["lat"].values, lat, atol=1e-9) or not np.allclose(ds["lon"].values, lon, atol=1e-9):
        return "it covers another region or grid"
    have = set(map(str, ds.data_vars))
    if have != names:
        return f"its variables differ ({sorted(have)} vs {sorted(names)})"
    return None


def layout_error(url: str, why: str) -> StoreError:
    return StoreError(url, f"an existing store cannot take this ingest: {why}.",
                      "pass --overwrite to rebuild it, or use another store.root.")


def starts_before(ctx: IngestContext, ds: xr.Dataset | None) -> bool:
    """True if the period starts before the stored time axis (only a rebuild can do that)."""
    if ds is None or "time" not in ds.coords or ds.sizes.get("time", 0) == 0:
        return False
    return day(ctx.cfg.period.start) < np.asarray(ds["time"].values, dtype="datetime64[D]")[0]


def time_axis(ctx: IngestContext, ds: xr.Dataset | None, url: str, problems: list[Sm1kmError], rebuild: bool):
    """(axis days, stored days or None): the period, extended to the stored start/end on appends."""
    p = ctx.cfg.period
    if ds is None or rebuild or "time" not in ds.coords:
        return axis(p.start, p.end), None
    stored = np.asarray(ds["time"].values, dtype="datetime64[D]")
    if stored.size == 0:
        return axis(p.start, p.end), None
    if not contiguous(stored):
        log.warning("%s: the stored time axis is not %s and the days after it (an append before sm1km 0.1 wrote "
                    "1970-01-01 for the new days): it is rewritten", url, iso(stored[0]))
        stored = stored[0] + np.arange(stored.size).astype("timedelta64[D]")
    s0, s1 = stored[0], stored[-1]
    if day(p.start) < s0:
        problems.append(StoreError(url, f"the store starts on {iso(s0)} but the period starts earlier ({p.start}); "
                                        "days can only be appended at the end.",
                                   "pass --overwrite to rebuild the store for the new period, or start the period "
                                   f"on {iso(s0)} or later."))
    return axis(s0, max(s1, day(p.end))), stored


def open_existing(ctx: IngestContext, url: str, index, lat, lon, names: set[str],
                  problems: list[Sm1kmError]) -> tuple[xr.Dataset | None, bool] | None:
    """The existing store (or None) and whether it must be rebuilt; None if it cannot take the ingest.

    Rebuilt: a layout that does not fit (with ``--overwrite``), a period that starts before it
    (with ``--overwrite``) or the remains of an interrupted first ingest (no index).
    """
    ds = existing_store(url, ctx.so)
    rebuild = False
    if ds is not None:
        why = check_layout(ds, url, lat, lon, names)
        if why:
            if not ctx.overwrite:
                problems.append(layout_error(url, why))
                return None
            rebuild = True
    if ctx.overwrite and starts_before(ctx, ds):
        log.warning("%s: the period starts before the store: rebuilding it (--overwrite)", url)
        rebuild = True
    if not rebuild and unfinished(ds, index.read() if ds is not None else None, url):
        rebuild = True
    return ds, rebuild
