"""`sm1km verify`: a finished store passes; an unfinished or non-conforming one is reported (exit 2)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import xarray as xr

from sm1km.cli import main
from sm1km.storage import store


def _write_store(root, finished=True, fill_mismatch=False, n_regions=2):
    url = store.join(root, "cube.zarr")
    time = pd.date_range("2020-01-01", periods=4, freq="D")
    sm = xr.DataArray(np.zeros((4, 4, 2), "float32"), dims=("time", "lat", "lon"),
                      attrs={"units": "m3 m-3", "standard_name": "volume_fraction_of_condensed_water_in_soil"})
    ds = xr.Dataset({"sm": sm.chunk({"time": 4, "lat": 2, "lon": 2})},
                    coords={"time": time, "lat": [10.5, 10.0, 9.5, 9.0], "lon": [1.0, 1.5]},
                    attrs=store.provenance_attrs(title="test"))
    enc = store.cf_int16_encoding(chunks=(4, 2, 2))
    if fill_mismatch:
        enc["fill_value"] = np.int16(0)
    store.create_template(url, ds, {"sm": enc})
    ledger = store.Ledger(root, "cube.zarr")
    for i in range(n_regions if finished else 1):
        reg = {"lat": slice(2 * i, 2 * i + 2)}
        blk = ds.isel(reg).copy(deep=True)
        blk["sm"] = blk.sm.fillna(0.25)
        store.write_region(url, blk[["sm"]], reg)
        ledger.mark(store.region_key(**reg))
    if finished:
        store.finalize(url, attrs=store.coverage_attrs(time))
    return url


def test_finished_store_passes(tmp_path, capsys):
    url = _write_store(str(tmp_path))
    assert main(["verify", url]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] and any("2 regions" in n for n in out["notes"])


def test_unfinished_store_is_reported(tmp_path, capsys):
    url = _write_store(str(tmp_path), finished=False)
    assert main(["verify", url]) == 2
    out = json.loads(capsys.readouterr().out)
    text = " ".join(out["problems"])
    assert "consolidated" in text and "time_coverage_start" in text and "ledger" in text


def test_fill_value_mismatch_is_reported(tmp_path, capsys):
    url = _write_store(str(tmp_path), fill_mismatch=True)
    assert main(["verify", url]) == 2
    assert "fill_value" in capsys.readouterr().out


def test_not_a_store(tmp_path, capsys):
    assert main(["verify", str(tmp_path / "nothing.zarr")]) == 2
    assert "not a Zarr v3 store" in capsys.readouterr().out
