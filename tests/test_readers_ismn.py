"""ISMN reader: the real downloads' quirks (line endings, flags, names, missing field, zips),
daily aggregation rules, layer selection with a report, and bad files."""

from __future__ import annotations

import json
import logging
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sm1km.errors import InputError
from sm1km.storage.readers.ismn import daily_means, parse_ismn_filename, read_ismn, read_ismn_file

REPO = Path(__file__).resolve().parents[1]
NARBONNE = "SMOSMANIA_SMOSMANIA_Narbonne_sm_0.050000_0.050000_ThetaProbe-ML2X_20070101_20070131.stm"
NARBONNE_CEOP = f"ismn/format_ceop_sep/SMOSMANIA/{NARBONNE}"
NARBONNE_HDR = f"ismn/format_header_values/SMOSMANIA/{NARBONNE}"
ARM1 = "COSMOS_COSMOS_ARM-1_sm_0.000000_0.190000_Cosmic-ray-Probe_20170810_20180809.stm"
ARM1_HDR = f"ismn/Data_seperate_files_header_20170810_20180809/COSMOS/ARM-1/{ARM1}"
ZIP_FRAYE = "ismn/Data_seperate_files_20170810_20180809.zip"
ZIP_CEOP = "ismn/zip_archives/ceop/Data_seperate_files_20170810_20180809.zip"
ZIP_HDR = "ismn/zip_archives/header/Data_seperate_files_header_20170810_20180809.zip"
ZIP_SMOSMANIA = "ismn/zip_archives/format_header_values/Data_SMOSMANIA.zip"
FRAYE = "Data_seperate_files_20170810_20180809/FR_Aqui/fraye/FR-Aqui_FR-Aqui_fraye_sm_0.050000_0.050000_ThetaProbe-ML2X_19500101_20210131.stm"


def real(rel: str) -> Path:
    for base in (REPO / "tests" / "data" / "real", REPO.parent / "shared" / "data" / "real"):
        if (base / rel).exists():
            return base / rel
    pytest.skip(f"real file {rel} is neither in tests/data/real nor in ../shared/data/real")


def zip_member(rel_zip: str, member: str) -> bytes:
    with zipfile.ZipFile(real(rel_zip)) as z:
        return z.read(member)


# ---------------------------------------------------------------------------------------------
# real files
# ---------------------------------------------------------------------------------------------

def test_cr_only_ceop_and_header_values_with_missing_field_agree():
    ceop = read_ismn_file(real(NARBONNE_CEOP))
    hdr = read_ismn_file(real(NARBONNE_HDR))
    for r in (ceop, hdr):
        assert (r.network, r.station, r.sensor) == ("SMOSMANIA", "Narbonne", "ThetaProbe-ML2X")
        assert (r.lat, r.lon, r.elevation, r.depth_from, r.depth_to) == (43.15, 2.9567, 112.0, 0.05, 0.05)
        assert len(r.hourly) == 741
        assert r.hourly["flag"].value_counts().to_dict() == {"U": 736, "D05": 5}
        assert r.hourly.index[0] == pd.Timestamp("2007-01-01 01:00")
        assert r.hourly.index[-1] == pd.Timestamp("2007-01-31 23:00")
        assert r.hourly["value"].min() == 0.1501 and r.hourly["value"].max() == 0.2149
        assert r.good.empty  # 'U' (unchecked) is not 'G'
    assert ceop.file_format == "ceop_sep" and hdr.file_format == "header_values"
    pd.testing.assert_series_equal(ceop.hourly["value"], hdr.hourly["value"])
    # the header file's row 2007/01/01 22:00 lacks the provider flag
    assert hdr.hourly.loc["2007-01-01 22:00", "orig_flag"] == ""
    assert (hdr.hourly["orig_flag"] == "").sum() == 1
    assert (hdr.hourly["orig_flag"] == "M").sum() == 740


@pytest.mark.filterwarnings("ignore:The inplace keyword")  # inside the ismn package, pandas 3.1
def test_agrees_with_the_ismn_package(tmp_path):
    """Independent check: the ismn package reads the same values and flags."""
    from ismn.filehandlers import DataFile

    root = tmp_path / "root"
    (root / "SMOSMANIA").mkdir(parents=True)
    shutil.copy(real(NARBONNE_HDR), root / "SMOSMANIA" / NARBONNE)
    theirs = DataFile(root, f"SMOSMANIA/{NARBONNE}", temp_root=tmp_path / "tmp").read_data()
    ours = read_ismn_file(root / "SMOSMANIA" / NARBONNE).hourly
    np.testing.assert_array_equal(ours["value"].to_numpy(), theirs["soil_moisture"].to_numpy())
    assert ours["flag"].tolist() == theirs["soil_moisture_flag"].tolist()
    np.testing.assert_array_equal(ours.index.values.astype("datetime64[s]"),
                                  theirs.index.values.astype("datetime64[s]"))


def test_header_ending_lf_cr_and_combined_flags():
    raw = real(ARM1_HDR).read_bytes()
    assert b"Probe\n\r2017" in raw  # the quirk is really in the file
    r = read_ismn_file(real(ARM1_HDR))
    assert (r.network, r.station, r.sensor) == ("COSMOS", "ARM-1", "Cosmic-ray-Probe")
    assert (r.depth_from, r.depth_to) == (0.0, 0.19)
    assert len(r.hourly) == 6865
    assert r.hourly["flag"].value_counts().to_dict() == {"G": 6514, "D05": 196, "D03": 137, "D03,D05": 17,
                                                         "D08,D05": 1}
    # the CEOP copy (CRLF, in a zip with members at the root) holds the same values
    ceop = read_ismn_file(f"x.zip::COSMOS/ARM-1/{ARM1}", zip_member(ZIP_CEOP, f"COSMOS/ARM-1/{ARM1}"))
    pd.testing.assert_frame_equal(r.hourly[["value", "flag"]], ceop.hourly[["value", "flag"]])


def test_fraye_names_from_content_and_daily_means():
    r = read_ismn_file(f"z.zip::{FRAYE}", zip_member(ZIP_FRAYE, FRAYE))
    assert parse_ismn_filename(FRAYE)["network"] == "FR-Aqui"
    assert (r.network, r.station) == ("FR_Aqui", "fraye")  # content wins over the file name
    assert r.notes and "FR-Aqui" in r.notes[0]
    assert len(r.hourly) == 52045 and len(r.good) == 50089
    d = daily_means(r.hourly, 12)
    assert d.loc["2016-06-07", "sm"] == pytest.approx(0.2220, abs=5e-5)
    assert d.loc["2016-06-08", "sm"] == pytest.approx(0.2076, abs=5e-5)
    assert d.loc["2016-06-07", "n_hours"] == 24


def test_read_ismn_zip_selects_surface_layer_and_reports_skips(caplog):
    with caplog.at_level(logging.INFO, logger="sm1km.storage.readers.ismn"):
        ds = read_ismn(real(ZIP_FRAYE))
    assert ds["sm"].dims == ("station", "time") and ds["sm"].dtype == np.float32
    assert ds["n_hours"].dtype == np.int16
    assert ds["station"].values.tolist() == ["FR_Aqui/fraye"]
    assert ds["network"].values.tolist() == ["FR_Aqui"] and ds["station_name"].values.tolist() == ["fraye"]
    assert float(ds["lat"][0]) == 44.467 and float(ds["lon"][0]) == -0.7269
    assert float(ds["depth_from"][0]) == 0.05 and float(ds["depth_to"][0]) == 0.05
    assert ds["sensor"].values.tolist() == ["ThetaProbe-ML2X"]
    assert str(ds["time"].values[0])[:10] == "2013-08-13" and str(ds["time"].values[-1])[:10] == "2020-01-01"
    assert float(ds["sm"].sel(time="2016-06-07")[0]) == pytest.approx(0.2220, abs=5e-5)
    # days with fewer than 12 good hours: NaN, count kept
    first = ds.isel(time=0)
    assert int(first["n_hours"][0]) == 14 and np.isfinite(first["sm"][0])
    last = ds.isel(time=-1)
    assert int(last["n_hours"][0]) == 1 and np.isnan(last["sm"][0])
    skipped = json.loads(ds.attrs["skipped"])
    assert len(skipped) == 2
    assert all("0–0.05 m" in s["reason"] and "COSMOS" in s["source"] for s in skipped)
    assert "Barrow-ARM" in caplog.text and "is not within" in caplog.text  # logged, not silent


def test_read_ismn_only_unchecked_flags_is_an_error_naming_them():
    # Data_SMOSMANIA.zip also carries python_metadata/ from an old ismn version: ignored
    with pytest.raises(InputError, match=r"no usable ISMN.*'U': 736"):
        read_ismn(real(ZIP_SMOSMANIA))


def test_read_ismn_folder_glob_and_list(tmp_path):
    d = tmp_path / "dl" / "SMOSMANIA"
    d.mkdir(parents=True)
    text = real(NARBONNE_HDR).read_bytes().replace(b" U ", b" G ")
    (d / NARBONNE).write_bytes(text)
    ds_dir = read_ismn(tmp_path / "dl")
    ds_glob = read_ismn(str(tmp_path / "dl" / "*" / "*.stm"))
    ds_list = read_ismn([d / NARBONNE])
    for ds in (ds_dir, ds_glob, ds_list):
        assert ds["station"].values.tolist() == ["SMOSMANIA/Narbonne"]
        np.testing.assert_array_equal(ds["sm"].values, ds_dir["sm"].values)
    assert not (tmp_path / "dl" / "python_metadata").exists()  # nothing written into the inputs


# ---------------------------------------------------------------------------------------------
# aggregation rules on hand-made files
# ---------------------------------------------------------------------------------------------

HEADER = "XNET XNET st1 45.00000 5.00000 100.00 {df:.2f} {dt:.2f} Sensor-A\n"


def make_file(folder: Path, rows: list[str], *, station="st1", dfrom=0.05, dto=0.05, sensor="Sensor-A",
              var="sm", newline="\n", header=None) -> Path:
    name = f"XNET_XNET_{station}_{var}_{dfrom:.6f}_{dto:.6f}_{sensor}_20200101_20200131.stm"
    h = header if header is not None else HEADER.format(df=dfrom, dt=dto).replace("st1", station).replace(
        "Sensor-A", sensor)
    p = folder / name
    p.write_bytes((h.rstrip("\n") + newline + newline.join(rows) + newline).encode())
    return p


def hours(day: str, n: int, value=0.25, flag="G", start=0):
    return [f"{day} {h:02d}:00 {value:.4f} {flag} M" for h in range(start, start + n)]


def test_min_hours_sentinels_and_utc_days(tmp_path):
    rows = (hours("2020/01/01", 11, 0.2) + hours("2020/01/02", 12, 0.3)
            + ["2020/01/03 00:00 NaN G M", "2020/01/03 01:00 -999.0 G M", "2020/01/03 02:00 -9999 G M"]
            + hours("2020/01/03", 12, 0.1, start=3)
            + hours("2020/01/04", 20, 0.4, flag="D03") + hours("2020/01/04", 4, 0.35, "G", start=20))
    p = make_file(tmp_path, rows, newline="\r\n")
    rec = read_ismn_file(p)
    assert rec.hourly["value"].isna().sum() == 3  # NaN, -999, -9999
    d = daily_means(rec.hourly, min_hours=12)
    assert np.isnan(d.loc["2020-01-01", "sm"]) and d.loc["2020-01-01", "n_hours"] == 11
    assert d.loc["2020-01-02", "sm"] == pytest.approx(0.3)
    assert d.loc["2020-01-03", "sm"] == pytest.approx(0.1) and d.loc["2020-01-03", "n_hours"] == 12
    assert np.isnan(d.loc["2020-01-04", "sm"]) and d.loc["2020-01-04", "n_hours"] == 4  # D03 excluded
    d10 = daily_means(rec.hourly, min_hours=10)
    assert d10.loc["2020-01-01", "sm"] == pytest.approx(0.2)
    ds = read_ismn(p, min_hours=12)
    assert ds.attrs["min_hours_per_day"] == 12
    np.testing.assert_allclose(ds["sm"].values[0], [np.nan, 0.3, 0.1, np.nan], atol=1e-6)
    np.testing.assert_array_equal(ds["n_hours"].values[0], [11, 12, 12, 4])


def test_subhourly_values_count_once_per_hour(tmp_path):
    rows = [f"2020/01/01 {h:02d}:{m:02d} {0.2 + 0.01 * (m // 15):.4f} G M" for h in range(12) for m in (0, 15, 30, 45)]
    d = daily_means(read_ismn_file(make_file(tmp_path, rows)).hourly, min_hours=12)
    assert d.loc["2020-01-01", "n_hours"] == 12
    assert d.loc["2020-01-01", "sm"] == pytest.approx(0.215)


def test_shallowest_layer_is_kept_and_others_reported(tmp_path):
    make_file(tmp_path, hours("2020/01/01", 24, 0.30), dfrom=0.00, dto=0.05, sensor="Shallow")
    make_file(tmp_path, hours("2020/01/01", 24, 0.20), dfrom=0.05, dto=0.05, sensor="Deep5")
    make_file(tmp_path, hours("2020/01/01", 24, 0.10), dfrom=0.10, dto=0.10, sensor="Deep10")
    make_file(tmp_path, hours("2020/01/01", 24, 0.30), station="st2", dfrom=0.00, dto=0.05, sensor="A")
    make_file(tmp_path, hours("2020/01/01", 24, 12.0), station="st2", dfrom=0.05, dto=0.05, var="ts", sensor="T")
    ds = read_ismn(tmp_path)
    assert ds["station"].values.tolist() == ["XNET/st1", "XNET/st2"]
    assert ds["sensor"].values.tolist() == ["Shallow", "A"]
    assert float(ds["sm"].values[0, 0]) == pytest.approx(0.30)
    reasons = {Path(s["source"]).name.split("_")[2] + "/" + Path(s["source"]).name.split("_")[6]: s["reason"]
               for s in json.loads(ds.attrs["skipped"])}
    assert "shallower" in reasons["st1/Deep5"]
    assert "not within" in reasons["st1/Deep10"]
    assert "variable 'ts'" in reasons["st2/T"]


# ---------------------------------------------------------------------------------------------
# bad files
# ---------------------------------------------------------------------------------------------

def test_unknown_flag_is_dropped_and_counted_not_fatal(tmp_path):
    """A flag outside ISMN's vocabulary (real old files carry provider codes) drops that value only."""
    p = make_file(tmp_path, hours("2020/01/01", 3) + ["2020/01/01 05:00 0.2500 X07 M", "2020/01/01 06:00 0.2 "
                                                      + "Z" * 80 + " M"])
    r = read_ismn_file(p)
    assert len(r.good) == 3
    long_flag = "Z" * 31 + "…"
    assert r.flag_counts == {"G": 3, "X07": 1, long_flag: 1}
    assert r.unknown_flags == {"X07": 1, long_flag: 1}


def test_documented_flag_vocabulary(tmp_path):
    """G, M (missing), U, C01–C03, D01–D10 and combinations: known; only G is used."""
    codes = ["G", "M", "U", "C01", "C03", "D01", "D10", "D03,D05", "C03,D02"]
    p = make_file(tmp_path, [f"2020/01/01 {h:02d}:00 0.2500 {c} M" for h, c in enumerate(codes)])
    r = read_ismn_file(p)
    assert r.unknown_flags == {} and sum(r.flag_counts.values()) == len(codes) and len(r.good) == 1


def test_provider_flag_is_not_the_quality_flag(tmp_path):
    """Column 4 is the ISMN flag, column 5 the provider's: 'M G' is a missing value, not a good one."""
    p = make_file(tmp_path, ["2020/01/01 00:00 0.2500 G D03", "2020/01/01 01:00 0.2600 M G"])
    r = read_ismn_file(p)
    assert r.good.tolist() == [0.25]
    assert r.flag_counts == {"G": 1, "M": 1}
    assert r.hourly["orig_flag"].tolist() == ["D03", "G"]


def test_garbage_line(tmp_path):
    p = make_file(tmp_path, hours("2020/01/01", 3) + ["<html>502 Bad Gateway</html>"])
    with pytest.raises(InputError, match="line 5: cannot parse"):
        read_ismn_file(p)
    p2 = make_file(tmp_path, ["2020/01/01 00:00 abc G M"], station="st9")
    with pytest.raises(InputError, match="not a number"):
        read_ismn_file(p2)


def test_wrong_encoding_and_empty(tmp_path):
    good = real(NARBONNE_HDR).read_bytes().decode("ascii")
    p = tmp_path / "utf16.stm"
    p.write_bytes(good.encode("utf-16"))
    with pytest.raises(InputError, match="not plain text"):
        read_ismn_file(p)
    p2 = tmp_path / "latin1.stm"
    p2.write_bytes(good.replace("Narbonne", "Narbonn\u00e9").encode("latin-1"))
    with pytest.raises(InputError, match="not valid UTF-8"):
        read_ismn_file(p2)
    p3 = tmp_path / "empty.stm"
    p3.write_bytes(b"\r\n")
    with pytest.raises(InputError, match="empty"):
        read_ismn_file(p3)


def test_real_malformed_file():
    with pytest.raises(InputError, match="not an ISMN header"):
        read_ismn_file(real("ismn/malformed/mal_formed_file.txt"))


def test_bad_file_in_a_folder_is_skipped_and_reported_or_raises_when_strict(tmp_path):
    make_file(tmp_path, hours("2020/01/01", 24, 0.30))
    bad = tmp_path / "XNET_XNET_st3_sm_0.000000_0.050000_S_20200101_20200131.stm"
    bad.write_text("XNET XNET st3 45 5 100 0.00 0.05 S\n2020/01/01 00:00 0.2 ZZZ M\n")
    garbage = tmp_path / "XNET_XNET_st4_sm_0.000000_0.050000_S_20200101_20200131.stm"
    garbage.write_text("XNET XNET st4 45 5 100 0.00 0.05 S\n<html>502</html>\n")
    ds = read_ismn(tmp_path)
    assert ds["station"].values.tolist() == ["XNET/st1"]
    skipped = json.loads(ds.attrs["skipped"])
    # st3's only value carries an unknown flag: no G value, skipped with the counts (not "unreadable")
    assert any("st3" in s["source"] and "no values with quality flag G" in s["reason"] and "ZZZ" in s["reason"]
               for s in skipped)
    assert json.loads(ds.attrs["flag_counts"]) == {"G": 24, "ZZZ": 1}
    assert any("st4" in s["source"] and "unreadable" in s["reason"] for s in skipped)
    with pytest.raises(InputError, match="cannot parse"):
        read_ismn(tmp_path, strict=True)


def test_corrupt_zip_and_missing_path(tmp_path):
    z = tmp_path / "dl.zip"
    z.write_bytes(real(ZIP_HDR).read_bytes()[:3000])
    with pytest.raises(InputError):
        read_ismn(z, strict=True)
    with pytest.raises(InputError, match="not found"):
        read_ismn(tmp_path / "nope")
