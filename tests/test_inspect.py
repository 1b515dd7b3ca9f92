"""``sm1km inspect``: JSON lines per file through ``sm1km.cli.main`` and the console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sm1km.cli import main

REPO = Path(__file__).resolve().parents[1]
CCI = "esa_cci_sm/esa_cci_sm_dailyImages/v05.2/combined/2016/ESACCI-SOILMOISTURE-L3S-SSMV-COMBINED-20160607000000-fv05.2.nc"
ACTIVE = "esa_cci_sm/esa_cci_sm_dailyImages/v05.2/active/2016/ESACCI-SOILMOISTURE-L3S-SSMS-ACTIVE-20160607000000-fv05.2.nc"
GRIB = "era5/cfgrib/tests/sample-data/soil-surface-level-mix.grib"
LANDMASK = "era5/ecmwf_models/src/ecmwf_models/era5/land_definition_files/landmask_0.25_0.25.nc"
NARBONNE_HDR = ("ismn/format_header_values/SMOSMANIA/"
                "SMOSMANIA_SMOSMANIA_Narbonne_sm_0.050000_0.050000_ThetaProbe-ML2X_20070101_20070131.stm")
ZIP_FRAYE = "ismn/Data_seperate_files_20170810_20180809.zip"
KEYS = {"path", "kind", "variable", "units", "time_start", "time_end", "n_valid", "min", "max"}


def real(rel: str) -> Path:
    for base in (REPO / "tests" / "data" / "real", REPO.parent / "shared" / "data" / "real"):
        if (base / rel).exists():
            return base / rel
    pytest.skip(f"real file {rel} is neither in tests/data/real nor in ../shared/data/real")


def run(capsys, *args):
    rc = main(["inspect", *map(str, args)])
    out, err = capsys.readouterr()
    return rc, [json.loads(line) for line in out.splitlines() if line.strip()], err


def test_cci_active_and_era5(capsys):
    rc, recs, err = run(capsys, real(CCI), real(ACTIVE), real(GRIB), "--era5-lsm", real(LANDMASK))
    assert rc == 0, err
    cci, active, era5 = recs
    for r in recs:
        assert KEYS <= set(r)
    assert cci["kind"] == "cci" and cci["variable"] == "sm" and cci["units"] == "m3 m-3"
    assert cci["n_valid"] == 170_984 and cci["min"] == 0.0 and cci["max"] == pytest.approx(0.47165, abs=1e-4)
    assert cci["time_start"] == cci["time_end"] == "2016-06-07"
    assert active["variable"] == "sm_percent" and active["units"] == "percent"
    assert active["n_valid"] == 175_117 and active["max"] == 100.0
    assert era5["kind"] == "era5" and era5["variable"] == "swvl1" and era5["units"] == "m3 m-3"
    assert era5["time_start"] == "2022-01-01" and era5["lsm_source"] == "file landmask_0.25_0.25.nc"
    assert 0.0 <= era5["min"] < era5["max"] <= 0.41


def test_ismn_file_and_zip(capsys):
    rc, recs, err = run(capsys, real(NARBONNE_HDR), real(ZIP_FRAYE))
    assert rc == 0, err
    narb = recs[0]
    assert narb["kind"] == "ismn" and narb["network"] == "SMOSMANIA" and narb["station"] == "Narbonne"
    assert (narb["lat"], narb["lon"], narb["depth_from"], narb["depth_to"]) == (43.15, 2.9567, 0.05, 0.05)
    assert narb["n_valid"] == 741 and narb["n_good"] == 0 and narb["min"] == 0.1501 and narb["max"] == 0.2149
    assert narb["time_start"] == "2007-01-01T01:00:00" and narb["time_end"] == "2007-01-31T23:00:00"
    members = {r["station"]: r for r in recs[1:]}
    assert set(members) == {"ARM-1", "Barrow-ARM", "fraye"}
    assert all("::" in r["path"] for r in recs[1:])
    assert members["fraye"]["network"] == "FR_Aqui" and members["fraye"]["n_good"] == 50_089
    assert members["ARM-1"]["depth_to"] == 0.19


def test_bad_files_error_lines_and_exit_2(capsys, tmp_path):
    bad_nc = tmp_path / "broken.nc"
    bad_nc.write_bytes(real(CCI).read_bytes()[:4000])
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    rc, recs, err = run(capsys, bad_nc, real(NARBONNE_HDR), text, tmp_path / "missing.nc",
                        real("ismn/malformed/mal_formed_file.txt"))
    assert rc == 2
    assert [r["station"] for r in recs] == ["Narbonne"]  # the good file in the middle is still inspected
    lines = err.strip().splitlines()
    errors = [ln for ln in lines if "sm1km inspect: error:" in ln]
    assert len(errors) == 4
    assert str(bad_nc) in errors[0] and ("truncated" in errors[0] or "corrupt" in errors[0])
    assert str(text) in errors[1] and "unrecognised" in errors[1]
    assert "missing.nc" in errors[2] and "not found" in errors[2]
    assert "mal_formed_file.txt" in errors[3] and "unrecognised text file" in errors[3]


def test_folder_is_walked(capsys, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.stm").write_bytes(real(NARBONNE_HDR).read_bytes())
    rc, recs, _ = run(capsys, tmp_path)
    assert rc == 0 and len(recs) == 1 and recs[0]["kind"] == "ismn"


def test_console_script_subprocess(tmp_path):
    exe = Path(sys.executable).with_name("sm1km")
    if not exe.exists():
        pytest.skip(f"console script {exe} not installed (pip install -e .)")
    bad = tmp_path / "bad.nc"
    bad.write_text("not netcdf")
    r = subprocess.run([str(exe), "inspect", str(real(CCI)), str(bad)], capture_output=True, text=True,
                       timeout=300, env={**os.environ})
    assert r.returncode == 2
    rec = json.loads(r.stdout.strip().splitlines()[0])
    assert rec["kind"] == "cci" and rec["n_valid"] == 170_984
    assert f"{bad}: this is a text file, not a netCDF file." in r.stderr
    assert "Traceback" not in r.stderr
    ok = subprocess.run([str(exe), "inspect", str(real(CCI))], capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0 and len(ok.stdout.strip().splitlines()) == 1
