"""``period.end: latest``: the last day for which every daily input exists.

The daily inputs are CCI, ERA5 and the daily LST (day, night); NDVI composites, static rasters and
ISMN downloads do not hold a day back (NDVI is gap-filled in time, the others have no time axis).
The record grows without holes, so per input the answer is the end of the run of available days
that starts at its first day not yet ingested (the day after the cube's ``time_coverage_end``,
or ``period.start`` for a new store), at most today (UTC):

* a ``{date:%Y%m%d}`` template: its URLs are probed forward from there, a few at a time (each
  request bounded), until one is missing (HTTP 404 / no such key = *not yet available*);
* a glob or list: the days come from the file names (CCI, LST) without probing;
* ERA5 (monthly files hold fewer days while the month is open — ERA5T): the last file found is
  read on one cell and its last day caps the run.

The run's last day is the earliest of these; a day with one input missing is not started, and the
log names the input that holds the run back (:class:`Latest` ``.blocking``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Callable

from sm1km.config import RunConfig
from sm1km.core import grid
from sm1km.errors import InputError
from sm1km.storage import input_files
from sm1km.storage.input_files import InputOptions, basename, display

from .inputs import input_options

log = logging.getLogger(__name__)

#: URLs of a template probed at once while walking back from today
PROBE_BATCH = 8


@dataclasses.dataclass(frozen=True)
class Latest:
    """The resolved last day, the input that sets it, and every daily input's last day."""

    day: dt.date | None              # None: some input has no day of the period at all
    blocking: str | None             # e.g. "inputs.era5"
    per_input: dict[str, dt.date | None]


def _cci_day(url: str) -> dt.date | None:
    from sm1km.storage.readers import parse_cci_filename

    info = parse_cci_filename(basename(url))
    if not info or info.get("frequency", "DAILY") != "DAILY":
        return None
    return dt.date.fromisoformat(str(info["date"])[:10])


def _raster_day(url: str) -> dt.date | None:
    from sm1km.storage.readers import raster_date

    return raster_date(basename(url))


def _era5_last_day(cfg: RunConfig, url: str, opts: InputOptions) -> dt.date | None:
    """The last day one ERA5 file holds (read on one cell of the region)."""
    import numpy as np

    from sm1km.storage.readers import read_era5

    r = cfg.coarse_region
    probe = grid.Region(r.row0, r.row0 + 1, r.col0, r.col0 + 1)
    ds = read_era5([url], region=probe, lsm_path=cfg.inputs.era5_lsm, input_options=opts)
    t = ds["time"].values
    return None if not len(t) else dt.date.fromisoformat(str(np.datetime64(t.max(), "D")))


def _walk(first: dt.date, today: dt.date, available: Callable[[list[dt.date]], list[bool]]) -> dt.date | None:
    """The last day of the run of available days from ``first`` (None: ``first`` is not available)."""
    last: dt.date | None = None
    day = first
    while day <= today:
        days = [day + dt.timedelta(days=k) for k in range(PROBE_BATCH) if day + dt.timedelta(days=k) <= today]
        for d, ok in zip(days, available(days)):
            if not ok:
                return last
            last = d
        day = days[-1] + dt.timedelta(days=1)
    return last


def _last_day(cfg: RunConfig, name: str, spec: list[str], day_of: Callable[[str], dt.date | None],
              opts: InputOptions, first: dt.date, today: dt.date) -> dt.date | None:
    """The last day of ``name``'s run of available days from ``first`` (see the module docstring)."""
    templates = [p for p in spec if input_files.is_template(p)]
    listed = [p for p in spec if not input_files.is_template(p)]
    files = input_files.resolve(listed, name.removeprefix("inputs."), opts, required=False) if listed else []
    by_day: dict[dt.date, str] = {}
    if name != "inputs.era5":
        for f in files:
            d = day_of(f)
            if d is not None:
                by_day.setdefault(d, f)
    urls_seen: dict[str, bool] = {}
    last_url: list[str] = []

    def available(days: list[dt.date]) -> list[bool]:
        out = [d in by_day or (name == "inputs.era5" and bool(files)) for d in days]
        if templates:
            want = {d: [input_files.expand_template(t, [d])[0] for t in templates] for d in days}
            new = sorted({u for us in want.values() for u in us} - set(urls_seen))
            urls_seen.update(input_files.probe(new, opts))
            for i, d in enumerate(days):
                hits = [u for u in want[d] if urls_seen[u]]
                if hits and not out[i]:
                    out[i] = True
                    last_url[:] = hits[-1:]
        return out

    last = _walk(first, today, available)
    if name == "inputs.era5" and last is not None:
        era5_last: str | None = last_url[0] if last_url else (sorted(files, key=basename)[-1] if files else None)
        if era5_last is not None:
            held = _era5_last_day(cfg, era5_last, opts)
            if held is not None and held < last:
                last = held if held >= first else None
    return last


def _first_open_day(cfg: RunConfig, name: str) -> dt.date:
    """The first day of ``name`` not yet in its cube (``period.start`` for a new store)."""
    from sm1km.storage import store

    cube = {"inputs.cci": "cci.zarr", "inputs.era5": "era5.zarr"}.get(name, "predictors.zarr")
    url, so = cfg.store.url("inputs", cube), cfg.store.storage_options()
    start = cfg.period.start
    try:
        if not store.exists(url, so):
            return start
        end = store.open_group(url, so, mode="r").attrs.get("time_coverage_end")
    except Exception:  # an unreadable store: ingest reports it; probe from the start
        return start
    if not end:
        return start
    return max(start, dt.date.fromisoformat(str(end)[:10]) + dt.timedelta(days=1))


def daily_inputs(cfg: RunConfig) -> dict[str, tuple[list[str], Callable[[str], dt.date | None]]]:
    """The configured daily inputs: name -> (its entries, how a file name gives its day)."""
    specs = cfg.inputs.specs()
    out: dict[str, tuple[list[str], Callable[[str], dt.date | None]]] = {}
    if "cci" in specs:
        out["inputs.cci"] = (specs["cci"], _cci_day)
    if "era5" in specs:
        out["inputs.era5"] = (specs["era5"], _cci_day)  # (day_of unused: ERA5 files are read)
    for k in ("lst_day", "lst_night"):
        if f"predictors.{k}" in specs:
            out[f"inputs.predictors.{k}"] = (specs[f"predictors.{k}"], _raster_day)
    return out


def resolve_latest(cfg: RunConfig, today: dt.date | None = None) -> Latest:
    """The last day (≤ ``today``, default the current UTC day) for which every daily input exists."""
    today = today or dt.datetime.now(dt.UTC).date()
    opts = input_options(cfg)
    per: dict[str, dt.date | None] = {}
    for name, (spec, day_of) in daily_inputs(cfg).items():
        first = _first_open_day(cfg, name)
        last = _last_day(cfg, name, spec, day_of, opts, first, today)
        if last is None and first > cfg.period.start:
            last = first - dt.timedelta(days=1)  # nothing new: the store's end
        per[name] = last
        log.info("period.end latest: %s is available up to %s", name, last or "no day of the period")
    if not per:
        raise InputError("inputs", "period.end is 'latest' but no daily input (cci, era5, lst_day, lst_night) is "
                                   "configured.", "give period.end as a date.")
    missing = [n for n, d in per.items() if d is None]
    if missing:
        return Latest(None, missing[0], per)
    blocking = min(per, key=lambda n: (per[n], n))
    return Latest(per[blocking], blocking, per)


def apply_latest(cfg: RunConfig, today: dt.date | None = None) -> RunConfig:
    """``cfg`` with ``period.end: latest`` replaced by the resolved day (unchanged if it is a date);
    an InputError when no day of the period has every daily input yet."""
    if not cfg.period.is_latest:
        return cfg
    res = resolve_latest(cfg, today)
    if res.day is None or res.day < cfg.period.start:
        raise InputError(display(", ".join(cfg.inputs.specs().get(str(res.blocking).removeprefix("inputs."), [])))
                         or str(res.blocking),
                         f"period.end is 'latest' but {res.blocking} has no file for any day from "
                         f"{cfg.period.start} on: no day can be started.",
                         "wait for the input to be published, or check its path/URL template.")
    others = {n: str(d) for n, d in res.per_input.items() if n != res.blocking}
    log.info("period.end latest = %s (held back by %s; the others reach %s)", res.day, res.blocking, others or "-")
    return cfg.with_end(res.day)


__all__ = ["Latest", "resolve_latest", "apply_latest", "daily_inputs"]
