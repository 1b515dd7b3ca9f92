"""``sm1km inspect PATH...``: describe input files as JSON lines (one object per file).

What each object holds: :mod:`sm1km.storage.readers.inspect` (:func:`~sm1km.storage.readers.inspect.inspect_path`).
A file that cannot be read prints one line to stderr naming it and the problem; the others are
still inspected and the exit code is 2.
"""

from __future__ import annotations

import logging
import sys

log = logging.getLogger(__name__)


def add_arguments(p) -> None:
    p.add_argument("paths", nargs="+", metavar="PATH", help="input files, folders or zip archives")
    p.add_argument("--era5-lsm", metavar="MASK", default=None,
                   help="land-sea mask for ERA5 files (netCDF/GRIB with lsm or land); default: lsm in the file")
    p.add_argument("--min-hours", type=int, default=12, help="(ISMN) hours a day needs for a daily mean")


def run(args) -> int:
    import json

    from sm1km.storage.metrics_json import jsonable
    from sm1km.storage.readers.inspect import inspect_path

    rc = 0
    for p in args.paths:
        for item in _safe(inspect_path, p, args.era5_lsm, args.min_hours):
            if isinstance(item, Exception):
                rc = 2
                msg = " ".join(str(item).split())
                sys.stderr.write(f"sm1km inspect: error: {msg}\n")
                continue
            sys.stdout.write(json.dumps(jsonable(item, _iso_day_of_datetime64), ensure_ascii=False, allow_nan=False) + "\n")
            sys.stdout.flush()
    return rc


def _iso_day_of_datetime64(v):
    """``jsonable``'s hook for the leaves it does not know: a datetime64 becomes its ISO day."""
    import numpy as np

    from sm1km.storage.readers._common import iso_day

    return iso_day(v) if isinstance(v, np.datetime64) else v


def _safe(fn, path, lsm_path, min_hours):
    """Run a generator, turning unexpected exceptions into one error line (details in the debug log)."""
    from sm1km.errors import InputError

    gen = fn(path, lsm_path, min_hours)
    while True:
        try:
            item = next(gen)
        except StopIteration:
            return
        except Exception as exc:  # a bug or an unforeseen file problem: report, keep going
            log.debug("inspect %s failed", path, exc_info=True)
            yield InputError(path, f"cannot inspect ({type(exc).__name__}: {exc}).",
                             "check the file; report a bug if it is a valid input.")
            return
        yield item
