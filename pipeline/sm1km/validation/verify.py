"""``sm1km verify URL...``: check a Zarr store against the project's conventions (like ``xcube verify``).

Checks: consolidated metadata present; CF/ACDD global attributes and coverage attributes that match
the time axis; coordinates (lat descending, lon ascending, regular); every data variable has units
(or flag attributes); packed int16 variables carry ``scale_factor``/``_FillValue`` as array attributes
(for non-xarray readers) and a zarr ``fill_value`` equal to ``_FillValue`` (unwritten chunks read as
missing); ``grid_mapping`` targets exist; the stage's ledger lists every region as finished (a store whose run
did not finish is reported as incomplete).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sm1km.storage import store

log = logging.getLogger(__name__)


@dataclass
class Report:
    url: str
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {"url": self.url, "ok": self.ok, "problems": self.problems, "notes": self.notes}


def verify_store(url: str, storage_options: Mapping[str, Any] | None = None, check_chunks: bool = True) -> Report:
    """Check one store; returns a Report (problems = convention violations or missing data)."""
    rep = Report(url)
    root_meta = store.read_json(store.join(url, "zarr.json"), storage_options)
    if root_meta is None:
        rep.problems.append("no zarr.json: not a Zarr v3 store")
        return rep
    if not root_meta.get("consolidated_metadata"):
        rep.problems.append("no consolidated metadata (the run did not finish, or readers over HTTP must list)")
    attrs = root_meta.get("attributes", {})
    for key in ("Conventions", "title", "date_created", "sm1km_version"):
        if key not in attrs:
            rep.problems.append(f"global attribute '{key}' missing")
    ds = store.open_dataset(url, storage_options, decode=False)
    group = store.open_group(url, storage_options)

    if "time" in ds.coords:
        import pandas as pd

        t = pd.to_datetime(store.open_dataset(url, storage_options).time.values)
        step = (t[1] - t[0]) if len(t) > 1 else pd.Timedelta("1D")
        for key, want in (("time_coverage_start", t.min()), ("time_coverage_end", t.max())):
            got = attrs.get(key)
            if got is None:
                rep.problems.append(f"coverage attribute '{key}' missing")
                continue
            got_t, want_t = pd.Timestamp(got), pd.Timestamp(want.date())
            # daily stores: exact; monthly stores: the end lies inside the last month
            late = pd.Timedelta(0) if key.endswith("start") or step <= pd.Timedelta("1D") else pd.Timedelta("31D")
            if not (want_t <= got_t <= want_t + late):
                rep.problems.append(f"{key} = {got} but the time axis says {want.date()}")
        if "last_updated" not in attrs:
            rep.problems.append("coverage attribute 'last_updated' missing")
    for name, descending in (("lat", True), ("lon", False)):
        if name in ds.coords and ds[name].size > 1:
            d = np.diff(ds[name].values.astype("float64"))
            if descending and not (d < 0).all():
                rep.problems.append("lat is not strictly descending (north to south)")
            if not descending and not (d > 0).all():
                rep.problems.append("lon is not strictly ascending")
            if not np.allclose(d, d[0], rtol=1e-9, atol=1e-12):
                rep.problems.append(f"{name} is not regularly spaced")

    for v in ds.data_vars:
        arr = store.array(group, str(v))
        a: dict[str, Any] = dict(arr.attrs)
        if ds[v].ndim == 0:
            continue
        if "units" not in a and "flag_values" not in a and "flag_meanings" not in a:
            rep.problems.append(f"{v}: no 'units' (or flag_values/flag_meanings) attribute")
        if arr.dtype == np.int16 and a.get("units") not in (None, "1", "count", "days"):
            for key in ("scale_factor", "_FillValue"):
                if key not in a:
                    rep.problems.append(f"{v}: packed int16 without '{key}' array attribute")
            if "_FillValue" in a and arr.fill_value is not None and int(arr.fill_value) != int(a["_FillValue"]):
                rep.problems.append(f"{v}: zarr fill_value {arr.fill_value} != _FillValue {a['_FillValue']} "
                                    "(unwritten chunks would read as valid data)")
        gm = a.get("grid_mapping")
        if gm and gm not in ds.variables:
            rep.problems.append(f"{v}: grid_mapping '{gm}' does not exist")
    if check_chunks:
        _check_ledger(rep, url, storage_options, ds, group)
    return rep


def _check_ledger(rep: Report, url: str, storage_options, ds, group) -> None:
    """Completeness from the stage's ledger (chunks that are all fill are legitimately not stored)."""
    root, name = url.rstrip("/").rsplit("/", 1)
    if root.endswith("/inputs"):
        root, name = root[: -len("/inputs")], f"inputs/{name}"
    ledger = store.Ledger(root, name, storage_options)
    keys = ledger.keys()
    if not keys:
        rep.notes.append("no region ledger for this store: completeness not checked")
        return
    import re

    region_key = re.compile(r"^([A-Za-z]\w*?)-(\d+)-(\d+)$")
    spans: dict[str, set[tuple[int, int]]] = {}
    parsed = [k for k in keys if all(region_key.match(p) for p in k.split("_"))]
    if not parsed:
        rep.notes.append("the ledger holds no region markers (e.g. ingest's index): completeness not checked")
        return
    for k in parsed:
        for part in k.split("_"):
            m = region_key.match(part)
            assert m is not None  # every part of a parsed key matched above
            dim, a, b = m.groups()
            spans.setdefault(dim, set()).add((int(a), int(b)))
    covered = {}
    for dim, ivs in spans.items():
        covered[dim] = sum(b - a for a, b in ivs)
    expected_regions = int(np.prod([len(ivs) for ivs in spans.values()]))
    missing_dims = [d for d, n in covered.items() if d in ds.sizes and n < ds.sizes[d]]
    if len(parsed) < expected_regions or missing_dims:
        rep.problems.append(f"ledger: {len(parsed)} of {max(expected_regions, len(parsed))} regions finished"
                            f"{' (dims not fully covered: ' + ', '.join(missing_dims) + ')' if missing_dims else ''}"
                            " — re-run the stage to finish")
    else:
        rep.notes.append(f"ledger: all {len(parsed)} regions finished")
