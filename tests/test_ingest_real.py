"""``sm1km ingest`` on real files: ESA CCI SM COMBINED (global daily files) and the ISMN station
FR_Aqui/fraye, which is the one real station collocated in time with the CCI test days.

Known answers from ../shared/data/real/README.md: CCI v05.2 at the fraye cell (44.375 N,
-0.625 E) 0.2011 (2016-06-07) and 0.1910 (06-08); ISMN daily means 0.2220 and 0.2076.
The CCI + ISMN test is skipped when ../shared is absent (the 7 MB fraye file and the second CCI
day are not copied); the ERA5 test uses the copies in tests/data/real.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from conftest import SHARED_REAL
from sm1km.config import RunConfig
from sm1km.errors import InputError
from sm1km.stages.ingest import ingest
from sm1km.storage import store

CCI = SHARED_REAL / "esa_cci_sm" / "esa_cci_sm_dailyImages"
FRAYE = SHARED_REAL / "ismn" / "Data_seperate_files_20170810_20180809" / "FR_Aqui" / "fraye"

needs_shared = pytest.mark.skipif(not (CCI.exists() and FRAYE.exists()), reason="../shared/data/real is absent")


def _cfg(tmp_path, cci_glob: str) -> RunConfig:
    return RunConfig.from_dict({
        "region": {"west": -1.0, "south": 44.0, "east": 0.0, "north": 45.0},
        "period": {"start": "2016-06-07", "end": "2016-06-08"},
        "store": {"root": str(tmp_path / "store")},
        "inputs": {"cci": cci_glob, "ismn": str(tmp_path / "ismn")},
        "cluster": {"kind": "synchronous"},
    })


@needs_shared
def test_real_cci_and_ismn(tmp_path):
    shutil.copytree(FRAYE, tmp_path / "ismn" / "FR_Aqui" / "fraye")
    cfg = _cfg(tmp_path, str(CCI / "v05.2" / "combined" / "2016" / "*.nc"))
    ingest(cfg)
    so = cfg.store.storage_options()
    cci = store.open_dataset(cfg.store.url("inputs", "cci.zarr"), so, consolidated=True).load()
    cell = cci.sm.sel(lat=44.375, lon=-0.625)
    np.testing.assert_allclose(cell.values, [0.2011, 0.1910], atol=1e-4)
    assert int(cci.flag.sel(lat=44.375, lon=-0.625).values[0]) == 0
    st = store.open_dataset(cfg.store.url("inputs", "stations.zarr"), so).load()
    assert [str(s) for s in st.station.values] == ["FR_Aqui/fraye"]
    np.testing.assert_allclose(st.sm.values[0], [0.2220, 0.2076], atol=1e-4)
    assert st.n_hours.values[0].tolist() == [24, 24] and bool(st.in_region.values[0])

    # the v04.2 files of the same days in the glob as well: duplicate days, store untouched
    before = store.checksum_tree(cfg.store.root)
    both = _cfg(tmp_path, str(CCI / "v0*" / "combined" / "2016" / "*.nc"))
    with pytest.raises(InputError, match="duplicate day 2016-06-0"):
        ingest(both)
    assert store.checksum_tree(cfg.store.root) == before


def test_real_era5_grib_with_real_land_mask(tmp_path):
    """The real ERA5 GRIB (swvl1 among other fields, 2° grid, 2022-01-01) and the real 0.25° mask."""
    from conftest import DATA_REAL

    grib = DATA_REAL / "era5" / "cfgrib" / "tests" / "sample-data" / "soil-surface-level-mix.grib"
    lsm = DATA_REAL / "era5" / "ecmwf_models" / "src" / "ecmwf_models" / "era5" / "land_definition_files" / \
        "landmask_0.25_0.25.nc"
    (tmp_path / "era5").mkdir()
    shutil.copy(grib, tmp_path / "era5" / grib.name)  # cfgrib may write an index file beside it
    cfg = RunConfig.from_dict({
        "region": {"west": 2.0, "south": 44.0, "east": 3.0, "north": 45.0},
        "period": {"start": "2022-01-01", "end": "2022-01-01"},
        "store": {"root": str(tmp_path / "store")},
        "inputs": {"era5": str(tmp_path / "era5" / "*.grib"), "era5_lsm": str(lsm)},
        "cluster": {"kind": "synchronous"},
    })
    ingest(cfg)
    era5 = store.open_dataset(cfg.store.url("inputs", "era5.zarr"), consolidated=True).load()
    assert era5.sizes["time"] == 1 and str(era5.time.values[0])[:10] == "2022-01-01"
    v = era5.swvl1.values
    assert np.isfinite(v).all() and (v > 0.2).all() and (v < 0.45).all()  # inland France, winter
    assert float(era5.land_fraction.min()) == 1.0
