"""Tiny files that declare huge contents are refused with the usual message, exit 2, and bounded
memory ([14]): each bomb runs through the real CLI (``sm1km inspect``) in a subprocess whose peak
RSS is compared with the same interpreter inspecting a small genuine file.

Measured on the 2-core VM: baseline (a real ISMN .stm) ~105 MB peak RSS, every bomb refused at
~105–115 MB; with the limits lifted (``SM1KM_MAX_*`` set huge) the 4.2 KB zip (an ISMN header +
4 M empty lines) costs 536 MB and the 8 KB netCDF declaring lat = 100 M costs 879 MB.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from sm1km.storage.readers import limits as L

REAL = Path(__file__).parent / "data" / "real"
GENUINE_STM = REAL / "ismn/format_header_values/SMOSMANIA/SMOSMANIA_SMOSMANIA_Narbonne_sm_0.050000_0.050000_ThetaProbe-ML2X_20070101_20070131.stm"
GRIB = REAL / "era5/cfgrib/tests/sample-data/soil-surface-level-mix.grib"
RSS_BOUND_MB = 300
STM_NAME = "NET/ST/NET_NET_ST_sm_0.000000_0.050000_X_20200101_20200131.stm"

DRIVER = """
import json, resource, sys
from sm1km.cli import main
rc = main(sys.argv[1:])
print(json.dumps({"rc": rc, "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _inspect(path: Path, env: dict | None = None) -> tuple[int, float, str]:
    p = subprocess.run([sys.executable, "-c", DRIVER, "inspect", str(path)], capture_output=True, text=True,
                       timeout=300, env={**os.environ, **(env or {})})
    last = json.loads(p.stdout.strip().splitlines()[-1])
    return last["rc"], last["maxrss_mb"], p.stderr


@pytest.fixture(scope="module")
def baseline_mb() -> float:
    rc, mb, err = _inspect(GENUINE_STM)
    assert rc == 0, err
    return mb


HEADER = (b"COSMOS     COSMOS          ARM-1             36.60540   -97.48780  322.00    0.00    0.19 "
          b"Cosmic-ray-Probe\n")


def _zip_newlines(path: Path, n: int, method=zipfile.ZIP_DEFLATED) -> Path:
    """A genuine ISMN header line followed by ``n`` empty lines (4.2 KB deflated for 4 M: 536 MB
    peak RSS without the limits)."""
    with zipfile.ZipFile(path, "w", compression=method, compresslevel=9 if method == zipfile.ZIP_DEFLATED else None) as z:
        z.writestr(STM_NAME, HEADER + b"\n" * n)
    return path


def _nc_declaring(path: Path, lat: int) -> Path:
    import netCDF4

    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("time", 1)
        nc.createDimension("lat", lat)
        nc.createDimension("lon", 4)
        nc.createVariable("time", "f8", ("time",))
        nc.createVariable("lat", "f4", ("lat",))  # never written: HDF5 allocates nothing
        nc.createVariable("lon", "f4", ("lon",))
        nc.createVariable("sm", "f4", ("time", "lat", "lon"), zlib=True)
    return path


BOMBS = {
    "zip_inflating_4M_newlines": lambda d: _zip_newlines(d / "ismn.zip", 4_000_000),
    "zip_stored_3M_lines": lambda d: _zip_newlines(d / "ismn_stored.zip", 3_000_000, zipfile.ZIP_STORED),
    "stm_3M_lines": lambda d: (d / STM_NAME.split("/")[-1]).write_bytes(b"x\n" * 3_000_000) and d / STM_NAME.split("/")[-1],
    "stm_one_20MB_line": lambda d: (d / "NET_NET_LONG_sm_0.000000_0.050000_X_20200101_20200131.stm").write_bytes(
        b"a" * 20_000_000) and d / "NET_NET_LONG_sm_0.000000_0.050000_X_20200101_20200131.stm",
    # 8 KB; 879 MB peak RSS without the limits
    "netcdf_lat_100M": lambda d: _nc_declaring(d / "ESACCI-SOILMOISTURE-L3S-SSMV-COMBINED-20200401000000-fv08.1.nc",
                                               100_000_000),
}


@pytest.mark.parametrize("bomb", sorted(BOMBS))
def test_bomb_is_refused_in_bounded_memory(bomb, tmp_path, baseline_mb):
    path = BOMBS[bomb](tmp_path)
    size_kb = path.stat().st_size / 1024
    rc, mb, err = _inspect(path)
    assert rc == 2, err
    assert path.name in err and "limit" in err and "SM1KM_MAX_" in err, err
    assert "Traceback" not in err
    assert mb - baseline_mb < RSS_BOUND_MB, f"{bomb} ({size_kb:.1f} KB): {mb:.0f} MB vs baseline {baseline_mb:.0f} MB"


def test_genuine_real_files_pass_the_limits():
    import netCDF4

    for f in sorted(REAL.rglob("*.zip")):
        with zipfile.ZipFile(f) as z:
            L.check_zip(z, str(f))
            for n in z.namelist():
                if n.endswith(".stm"):
                    L.check_text(L.read_zip_member(z, n, n), n)
    for f in sorted(REAL.rglob("*.nc")):
        L.check_netcdf_header(str(f))
        with netCDF4.Dataset(f) as nc:
            assert max(len(d) for d in nc.dimensions.values()) <= L.Limits().max_dim
    L.check_grib_messages(str(GRIB))


def test_limits_from_the_environment(monkeypatch):
    monkeypatch.setenv("SM1KM_MAX_GRIB_POINTS", "10")
    with pytest.raises(L.LimitError, match="SM1KM_MAX_GRIB_POINTS"):
        L.check_grib_messages(str(GRIB))
    monkeypatch.setenv("SM1KM_MAX_ZIP_RATIO", "1.5")
    assert L.limits().max_zip_ratio == 1.5
    monkeypatch.setenv("SM1KM_MAX_LINES", "-3")
    with pytest.raises(Exception, match="positive"):
        L.limits()


def test_zip_member_count_and_declared_total(tmp_path):
    p = tmp_path / "many.zip"
    with zipfile.ZipFile(p, "w") as z:
        for i in range(30):
            z.writestr(f"m{i}.stm", b"x")
    with zipfile.ZipFile(p) as z:
        with pytest.raises(L.LimitError, match="archive members"):
            L.check_zip(z, str(p), L.Limits(max_zip_members=10))
        with pytest.raises(L.LimitError, match="uncompressed size"):
            L.check_zip(z, str(p), L.Limits(max_unzipped_bytes=10))
        with pytest.raises(L.LimitError, match="after inflating"):
            L.read_zip_member(z, "m0.stm", "m0", L.Limits(max_unzipped_bytes=0))


def test_raster_window_limit(tmp_path, monkeypatch):
    """A raster 100x finer than the 1 km grid over the region needs a window far above the limit."""
    import rasterio
    from rasterio.transform import from_origin

    from sm1km.core import grid
    from sm1km.storage.readers.rasters import read_raster

    region = grid.snap_bbox((0.0, 40.0, 0.5, 40.5))
    p = tmp_path / "fine.tif"
    n = 2000
    with rasterio.open(p, "w", driver="GTiff", width=n, height=n, count=1, dtype="float32", crs="EPSG:4326",
                       transform=from_origin(0.0, 40.5, 0.5 / n, 0.5 / n), tiled=True) as ds:
        ds.write(np.zeros((n, n), np.float32), 1)
    monkeypatch.setenv("SM1KM_MAX_READ_CELLS", str(n * n // 2))
    with pytest.raises(L.LimitError, match="SM1KM_MAX_READ_CELLS"):
        read_raster(p, region, grid.DEFAULT_FACTOR)
