"""``period.end: latest``: the last day for which every daily input exists.

The daily inputs are CCI, ERA5 and the daily LST (day, night); NDVI composites, static rasters and
ISMN downloads do not hold a day back (NDVI is gap-filled in time, the others have no time axis).
Per input, the last available day is found without decoding anything but ERA5:

* a ``{date:%Y%m%d}`` template: its URLs are probed backwards from today (a few at a time, each
  request bounded; 404 = not yet available) until one exists;
* a glob or list: the days come from the file names (CCI, LST), for ERA5 from a one-cell read of
  the last file (monthly files hold fewer days while the month is open — ERA5T).

An ERA5 template is probed like the others and then its last file is read the same way. The
run's last day is the earliest of these; a day with one input missing is not started, and the log
names the input that holds the run back (:class:`Latest` ``.blocking``).
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


def _template_last(template: str, start: dt.date, today: dt.date, opts: InputOptions) -> tuple[dt.date, str] | None:
    """(last day whose URL exists, that URL), walking back from ``today`` to ``start``."""
    day = today
    while day >= start:
        days = [day - dt.timedelta(days=k) for k in range(PROBE_BATCH) if day - dt.timedelta(days=k) >= start]
        urls = [input_files.expand_template(template, [d])[0] for d in days]
        found = input_files.probe(sorted(set(urls)), opts)
        for d, u in zip(days, urls):
            if found[u]:
                return d, u
        day = days[-1] - dt.timedelta(days=1)
    return None


def _last_day(cfg: RunConfig, name: str, spec: list[str], day_of: Callable[[str], dt.date | None],
              opts: InputOptions, today: dt.date) -> dt.date | None:
    start = cfg.period.start
    best: dt.date | None = None
    for part in spec:
        if input_files.is_template(part):
            hit = _template_last(part, start, today, opts)
            if hit is None:
                continue
            d, url = hit
            if name == "inputs.era5":
                d = _era5_last_day(cfg, url, opts) or d
        else:
            files = input_files.resolve(part, name.removeprefix("inputs."), opts, required=False)
            if name == "inputs.era5":
                d_ = _era5_last_day(cfg, sorted(files, key=basename)[-1], opts) if files else None
            else:
                days = [x for x in map(day_of, files) if x is not None and start <= x <= today]
                d_ = max(days) if days else None
            if d_ is None:
                continue
            d = d_
        best = d if best is None else max(best, d)
    return best


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
        per[name] = _last_day(cfg, name, spec, day_of, opts, today)
        log.info("period.end latest: %s is available up to %s", name, per[name] or "no day of the period")
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
