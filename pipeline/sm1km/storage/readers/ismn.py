"""ISMN in-situ soil moisture downloads ("Header+values" and "CEOP separate files" formats).

Parsed directly (no ``ismn`` package metadata folder is written; inputs may be read-only).
Robust to what real downloads contain:

* line endings CRLF, CR only (old Mac), and a header ending in ``\\n\\r`` (blank lines ignored);
* trailing spaces; a data row missing its last field (the provider flag);
* ISMN quality flags: the documented vocabulary ``G`` (good), ``M`` (missing), ``U``
  (unchecked, old downloads), ``C01–C03``, ``D01–D10`` and comma-joined codes (``D03,D05``,
  ``C03,D02``), and whatever else real (old, provider-flagged) files carry. Only ``G`` values are
  used; every other value is dropped and **counted per flag** (``StationRecord.flag_counts``,
  ``attrs['flag_counts']`` of :func:`read_ismn`, ``sm1km inspect``), an unknown flag is logged
  but never a reason to reject a station's multi-year file. The provider flag column (``M`` …)
  is *not* the quality flag and is kept only for information;
* missing values written as ``NaN`` or -999/-9999;
* network/station spelled differently in the file name and inside the file (``FR-Aqui`` vs
  ``FR_Aqui``): the file content wins;
* folders, zip archives (members at the root or in a top folder; ``python_metadata/`` ignored)
  and globs.

Selection for training targets (docs/architecture.md, ``inputs/stations.zarr``): soil moisture
sensors with depth_from ≥ 0 and depth_to ≤ 0.05 m; per station the shallowest such layer (ties:
the sensor with most good values); only flag ``G`` values; hourly means, then daily means over
the UTC day when at least ``min_hours`` hours have a good value. Everything skipped is reported
(logged and returned in ``attrs['skipped']``).
"""

from __future__ import annotations

import fnmatch
import functools
import glob
import json
import logging
import os
import re
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import xarray as xr

from sm1km.errors import InputError
from sm1km.storage import input_files
from sm1km.storage.input_files import InputOptions
from sm1km.storage.readers._common import sniff
from sm1km.storage.readers.limits import ENV, LimitError, check_text, check_zip, limits, read_zip_member

log = logging.getLogger(__name__)

#: an ISMN download: a folder, zip, glob or ``.stm`` file, or a list of them
IsmnSource = str | os.PathLike[str] | list[Any] | tuple[Any, ...]

MAX_SURFACE_DEPTH_M = 0.05
MISSING_SENTINELS = (-999.0, -9999.0, -99.0)
_FLAG_TOKEN = re.compile(r"^(G|M|U|C0[1-3]|D0[1-9]|D10)$")
_DATE = re.compile(r"^\d{4}/\d{2}/\d{2}$")
_TIME = re.compile(r"^\d{2}:\d{2}(:\d{2})?$")
_NAME_RE = re.compile(
    r"^(?P<cse>[^_]+)_(?P<network>[^_]+)_(?P<station>.+)_(?P<var>[a-z]+\d*)_(?P<dfrom>-?\d+\.\d+)_"
    r"(?P<dto>-?\d+\.\d+)_(?P<sensor>.+)_(?P<start>\d{8})_(?P<end>\d{8})\.stm$")


@dataclass
class StationRecord:
    """One ISMN sensor file: metadata plus the time series (index UTC, columns value/flag/orig_flag)."""

    network: str
    station: str
    lat: float
    lon: float
    elevation: float
    depth_from: float
    depth_to: float
    sensor: str
    variable: str
    hourly: pd.DataFrame
    source: str
    file_format: str  # "header_values" or "ceop_sep"
    notes: list[str] = field(default_factory=list)

    @property
    def station_id(self) -> str:
        return f"{self.network}/{self.station}"

    @property
    def good(self) -> pd.Series:
        """Values with ISMN quality flag exactly ``G``."""
        return self.hourly["value"][self.hourly["flag"] == "G"].dropna()

    @property
    def flag_counts(self) -> dict[str, int]:
        """Rows per quality flag (sorted by flag)."""
        return {str(k): int(c) for k, c in sorted(self.hourly["flag"].value_counts().items())}

    @property
    def unknown_flags(self) -> dict[str, int]:
        """Rows per flag outside ISMN's documented vocabulary (dropped like every non-G value)."""
        return {k: c for k, c in self.flag_counts.items() if not known_flag(k)}


def parse_ismn_filename(name: str) -> dict[str, Any]:
    """Fields of an ISMN file name ({} if it does not follow the pattern)."""
    m = _NAME_RE.match(Path(name).name)
    if not m:
        return {}
    d: dict[str, Any] = m.groupdict()
    d["dfrom"], d["dto"] = float(d["dfrom"]), float(d["dto"])
    return d


def _decode(data: bytes, where: str) -> str:
    if not data.strip():
        raise InputError(where, "the file is empty.", "re-download the ISMN data.")
    if data[:2] in (b"\xff\xfe", b"\xfe\xff") or b"\x00" in data[:4096]:
        raise InputError(where, "the file is not plain text (UTF-16 or binary content).",
                         "pass the ISMN .stm files as downloaded (UTF-8/ASCII text).")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(where, f"the file is not valid UTF-8 text (byte {exc.start}: {data[exc.start:exc.start + 1]!r}).",
                         "pass the ISMN .stm files as downloaded (UTF-8/ASCII text).") from None


def _float(tok: str) -> float:
    if tok.lower() == "nan":
        return np.nan
    return float(tok)


#: longest flag kept verbatim (longer ones are cut: they are counted, never used)
MAX_FLAG_CHARS = 32


def known_flag(flag: str) -> bool:
    """Is ``flag`` in ISMN's documented vocabulary (G, M, U, C01–C03, D01–D10, comma-joined)?"""
    return all(_FLAG_TOKEN.match(tok) for tok in flag.split(","))


def _flag(flag: str) -> str:
    return flag if len(flag) <= MAX_FLAG_CHARS else flag[:MAX_FLAG_CHARS - 1] + "…"


def read_ismn_file(path: str | os.PathLike[str], data: bytes | None = None) -> StationRecord:
    """Parse one ISMN ``.stm`` file (either format). ``data``: the bytes, when read from a zip."""
    where = os.fspath(path)
    if data is None:
        try:
            data = Path(where).read_bytes()
        except OSError as exc:
            raise InputError(where, f"cannot read the file ({exc.strerror or exc}).", "check the path.") from None
    check_text(data, where)
    text = _decode(data, where)
    lines = [(i + 1, ln.strip()) for i, ln in enumerate(text.splitlines())]
    lines = [(i, ln) for i, ln in lines if ln]
    if not lines:
        raise InputError(where, "the file has no data lines.", "re-download the ISMN data.")
    first = lines[0][1].split()
    if first and _DATE.match(first[0]):
        return _parse_ceop(where, lines)
    return _parse_header_values(where, lines)


def _name_info(where: str) -> dict[str, Any]:
    return parse_ismn_filename(where.split("::")[-1])


def _header_fields(tokens: list[str], where: str) -> dict[str, Any]:
    """network network station lat lon elevation depth_from depth_to sensor (station may contain spaces)."""
    nums = []
    for i in range(len(tokens) - 4):
        try:
            vals = [_float(t) for t in tokens[i:i + 5]]
        except ValueError:
            continue
        nums.append((i, vals))
    if not nums or len(tokens) < 8:
        raise InputError(where, f"line 1: not an ISMN header (expected 'network network station lat lon "
                         f"elevation depth_from depth_to sensor', got {' '.join(tokens)[:120]!r}).",
                         "pass ISMN .stm files (Header+values or CEOP format).")
    i, (lat, lon, elev, dfrom, dto) = nums[0]
    names = tokens[:i]
    if len(names) < 3:
        raise InputError(where, "line 1: header lacks network and station names.", "pass ISMN .stm files.")
    return {"network": names[1], "station": " ".join(names[2:]), "lat": lat, "lon": lon, "elevation": elev,
            "depth_from": dfrom, "depth_to": dto, "sensor": " ".join(tokens[i + 5:])}


def _rows_to_frame(times: list[str], values: list[float], flags: list[str], orig: list[str],
                   where: str) -> pd.DataFrame:
    idx = pd.to_datetime(pd.Series(times), format="%Y/%m/%d %H:%M", errors="coerce")
    if idx.isna().any():
        bad = int(np.nonzero(idx.isna().to_numpy())[0][0])
        raise InputError(where, f"invalid date/time {times[bad]!r}.", "re-download the ISMN data.")
    df = pd.DataFrame({"value": np.asarray(values, dtype=np.float64),
                       "flag": pd.array(flags, dtype="str"),
                       "orig_flag": pd.array(orig, dtype="str")},
                      index=pd.DatetimeIndex(idx.to_numpy(), name="time"))
    sentinel = np.isin(df["value"].to_numpy(), MISSING_SENTINELS)
    df.loc[sentinel, "value"] = np.nan
    if not df.index.is_monotonic_increasing:
        df = df.sort_index(kind="stable")
    if df.index.has_duplicates:
        log.info("%s: %d duplicate time stamps; keeping the first", where, int(df.index.duplicated().sum()))
        df = df[~df.index.duplicated(keep="first")]
    return df


def _parse_header_values(where: str, lines: Sequence[tuple[int, str]]) -> StationRecord:
    hdr = _header_fields(lines[0][1].split(), where)
    times, values, flags, orig = [], [], [], []
    for lineno, ln in lines[1:]:
        tok = ln.split()
        if len(tok) not in (4, 5) or not _DATE.match(tok[0]) or not _TIME.match(tok[1]):
            raise InputError(where, f"line {lineno}: cannot parse {ln[:80]!r} (expected 'YYYY/MM/DD HH:MM value "
                             "flag provider_flag').", "remove the damaged line or re-download the file.")
        try:
            v = _float(tok[2])
        except ValueError:
            raise InputError(where, f"line {lineno}: value {tok[2]!r} is not a number.",
                             "remove the damaged line or re-download the file.") from None
        times.append(f"{tok[0]} {tok[1][:5]}")
        values.append(v)
        flags.append(_flag(tok[3]))
        orig.append(tok[4] if len(tok) == 5 else "")
    return _record(where, hdr, _rows_to_frame(times, values, flags, orig, where), "header_values")


def _parse_ceop(where: str, lines: Sequence[tuple[int, str]]) -> StationRecord:
    times: list[str] = []
    values: list[float] = []
    flags: list[str] = []
    orig: list[str] = []
    hdr: dict[str, Any] | None = None
    for lineno, ln in lines:
        tok = ln.split()
        if len(tok) not in (14, 15) or not (_DATE.match(tok[2]) and _TIME.match(tok[3])):
            raise InputError(where, f"line {lineno}: cannot parse {ln[:80]!r} (expected 15 columns: date time "
                             "date_utc time_utc cse network station lat lon elevation depth_from depth_to value "
                             "flag provider_flag).", "remove the damaged line or re-download the file.")
        try:
            v = _float(tok[12])
            if hdr is None:
                hdr = {"network": tok[5], "station": tok[6], "lat": float(tok[7]), "lon": float(tok[8]),
                       "elevation": _float(tok[9]), "depth_from": float(tok[10]), "depth_to": float(tok[11])}
        except ValueError:
            raise InputError(where, f"line {lineno}: non-numeric field in {ln[:80]!r}.",
                             "remove the damaged line or re-download the file.") from None
        times.append(f"{tok[2]} {tok[3][:5]}")  # UTC columns
        values.append(v)
        flags.append(_flag(tok[13]))
        orig.append(tok[14] if len(tok) == 15 else "")
    info = _name_info(where)
    assert hdr is not None  # ``lines`` is not empty (read_ismn_file checks)
    hdr["sensor"] = info.get("sensor", "unknown")
    return _record(where, hdr, _rows_to_frame(times, values, flags, orig, where), "ceop_sep")


def _record(where: str, hdr: dict[str, Any], df: pd.DataFrame, fmt: str) -> StationRecord:
    info = _name_info(where)
    notes = []
    if info:
        if info["network"] != hdr["network"] or info["station"] != hdr["station"]:
            notes.append(f"file name says {info['network']}/{info['station']}, content says "
                         f"{hdr['network']}/{hdr['station']} (content used)")
            log.debug("%s: %s", where, notes[-1])
        if abs(info["dfrom"] - hdr["depth_from"]) > 1e-6 or abs(info["dto"] - hdr["depth_to"]) > 1e-6:
            notes.append("depths in the file name differ from the content (content used)")
    if not (-90 <= hdr["lat"] <= 90 and -180 <= hdr["lon"] <= 180):
        raise InputError(where, f"station coordinates out of range (lat {hdr['lat']}, lon {hdr['lon']}).",
                         "re-download the ISMN data.")
    return StationRecord(network=hdr["network"], station=hdr["station"], lat=float(hdr["lat"]),
                         lon=float(hdr["lon"]), elevation=float(hdr["elevation"]),
                         depth_from=float(hdr["depth_from"]), depth_to=float(hdr["depth_to"]),
                         sensor=hdr["sensor"] or info.get("sensor", "unknown"),
                         variable=info.get("var", "sm") if info else "sm", hourly=df, source=where,
                         file_format=fmt, notes=notes)


# --------------------------------------------------------------------------------------------
# pure daily aggregation
# --------------------------------------------------------------------------------------------

def daily_means(hourly: pd.DataFrame, min_hours: int = 12) -> pd.DataFrame:
    """Daily (UTC) means of flag-``G`` values: columns ``sm`` (NaN if < ``min_hours``) and ``n_hours``.

    Sub-hourly data are first averaged per hour so ``n_hours`` counts distinct hours.
    """
    good = hourly.loc[(hourly["flag"] == "G") & hourly["value"].notna(), "value"]
    if good.empty:
        return pd.DataFrame({"sm": pd.Series(dtype="float64"), "n_hours": pd.Series(dtype="int64")})
    per_hour = good.groupby(cast(pd.DatetimeIndex, good.index).floor("h")).mean()
    grp = per_hour.groupby(cast(pd.DatetimeIndex, per_hour.index).floor("D"))
    out = pd.DataFrame({"sm": grp.mean(), "n_hours": grp.size()})
    out.loc[out["n_hours"] < min_hours, "sm"] = np.nan
    out.index.name = "time"
    return out


# --------------------------------------------------------------------------------------------
# walking downloads (folders, zips, globs)
# --------------------------------------------------------------------------------------------

def iter_ismn_sources(source: IsmnSource, input_options: InputOptions | None = None
                      ) -> list[tuple[str, Callable[[], bytes]]]:
    """(name, read_bytes) for every ``.stm`` file in a folder, zip, glob, file, or list of them.
    A remote ``.stm`` URL (``input_options``) is read as bytes, at most ``max_unzipped_bytes``."""
    if isinstance(source, (list, tuple)):
        out = []
        for s in source:
            out.extend(iter_ismn_sources(s, input_options))
        return out
    s = os.fspath(source)
    if input_files.is_remote(s):
        return [(input_files.display(s), functools.partial(_read_remote, s, input_options))]
    if glob.has_magic(s):
        hits = sorted(glob.glob(s, recursive=True))
        if not hits:
            raise InputError(s, "no files match this pattern.", "check the ISMN path/glob in the config.")
        return iter_ismn_sources(hits)
    p = Path(s)
    if not p.exists():
        raise InputError(s, "file or folder not found.", "check the ISMN path in the config.")
    if p.is_dir():
        out = []
        for f in sorted(p.rglob("*")):
            if f.is_file() and (f.suffix.lower() in (".stm", ".zip")) and "python_metadata" not in f.parts:
                out.extend(iter_ismn_sources(f))
        return out
    if sniff(p) == "zip":
        return _zip_members(p)

    def read(path: str = s) -> bytes:
        return Path(path).read_bytes()

    return [(s, read)]


def _read_remote(url: str, opts: InputOptions | None) -> bytes:
    cap = limits().max_unzipped_bytes
    try:
        with input_files.open_input(url, opts) as f:
            data = f.read(cap + 1)
    except Exception as exc:
        raise InputError(input_files.display(url), f"cannot read the file ({type(exc).__name__}).",
                         "check the URL, the network and the credentials in the environment.") from None
    if len(data) > cap:
        raise LimitError(input_files.display(url), f"the file is larger than {cap:,} bytes (max_unzipped_bytes).",
                         f"if the file is genuine, raise the limit: export {ENV['max_unzipped_bytes']}=<larger>.")
    return bytes(data)


def _zip_members(p: Path) -> list[tuple[str, Callable[[], bytes]]]:
    try:
        with zipfile.ZipFile(p) as zf:
            check_zip(zf, str(p))
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(str(p), f"corrupt zip archive ({exc}).", "re-download the ISMN archive.") from None
    out: list[tuple[str, Callable[[], bytes]]] = []
    for n in sorted(names):
        if n.endswith("/") or "python_metadata/" in n or not fnmatch.fnmatch(n.lower(), "*.stm"):
            continue

        def read(n: str = n) -> bytes:
            try:
                with zipfile.ZipFile(p) as z:
                    return read_zip_member(z, n, f"{p}::{n}")
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                raise InputError(f"{p}::{n}", f"cannot extract ({exc}).", "re-download the ISMN archive.") from None
        out.append((f"{p}::{n}", read))
    if not out:
        raise InputError(str(p), f"the zip archive holds no ISMN .stm file ({len(names)} member(s)"
                                 f"{': ' + ', '.join(sorted(names)[:3]) if names else ''}).",
                         "re-download the ISMN archive (formats 'Header+values' or 'CEOP'); an interrupted "
                         "download can leave an empty archive.")
    return out


def _skip(skipped: list[dict[str, str]], source: str, reason: str, level: int = logging.INFO) -> None:
    skipped.append({"source": source, "reason": reason})
    log.log(level, "ISMN skip %s: %s", source, reason)


def read_ismn(source: IsmnSource, min_hours: int = 12, *, variable: str = "sm", strict: bool = False,
              input_options: InputOptions | None = None) -> xr.Dataset:
    """Daily surface soil moisture per station from an ISMN download (folder, zip, glob, file, list).

    Returns a Dataset with dims (station, time): ``sm`` float32 m³/m³ (NaN when fewer than
    ``min_hours`` good hours), ``n_hours`` int16; coords ``station`` (``network/station``),
    ``network``, ``station_name``, ``lat``, ``lon``, ``elevation``, ``depth_from``, ``depth_to``,
    ``sensor``. ``attrs['skipped']`` is a JSON list of {source, reason} for every file or sensor
    not used (deeper layer, other variable, no good values, unreadable file). With
    ``strict=True`` an unreadable file raises instead of being skipped. Remote ``.stm`` URLs
    (``input_options``) are read as bytes; a remote zip is read from a copy in the bounded local
    input cache, removed afterwards (names in attrs are the redacted URLs).
    """
    listed = list(source) if isinstance(source, (list, tuple)) else [source]
    zips = [os.fspath(u) for u in listed if input_files.is_remote(os.fspath(u))
            and input_files.basename(os.fspath(u)).lower().endswith(".zip")]
    if zips:
        with input_files.local_paths(zips, input_options) as local:
            named = dict(zip(local, zips))
            by_url = {url_: copy_ for copy_, url_ in named.items()}
            ds = read_ismn([by_url.get(os.fspath(x), x) for x in listed], min_hours, variable=variable, strict=strict,
                           input_options=input_options)
        for key in ("skipped", "source_files"):
            text = ds.attrs.get(key, "")
            for copy_, url_ in named.items():
                text = text.replace(json.dumps(copy_)[1:-1], json.dumps(input_files.display(url_))[1:-1])
            ds.attrs[key] = text
        return ds
    sources = iter_ismn_sources(source, input_options)
    skipped: list[dict[str, str]] = []
    candidates: list[StationRecord] = []
    flag_counts: dict[str, int] = {}
    n_files = 0
    for name, read in sources:
        info = parse_ismn_filename(name.split("::")[-1])
        if info and info["var"] != variable:
            _skip(skipped, name, f"variable {info['var']!r}, not {variable!r}", logging.DEBUG)
            continue
        n_files += 1
        try:
            rec = read_ismn_file(name, read())
        except InputError as exc:
            if strict:
                raise
            _skip(skipped, name, f"unreadable: {exc.problem}", logging.WARNING)
            continue
        for k, c in rec.flag_counts.items():
            flag_counts[k] = flag_counts.get(k, 0) + c
        if rec.unknown_flags:
            log.info("ISMN %s: %d value(s) with flags outside ISMN's vocabulary dropped: %s", name,
                     sum(rec.unknown_flags.values()), rec.unknown_flags)
        if not (rec.depth_from >= 0 and rec.depth_to <= MAX_SURFACE_DEPTH_M + 1e-9 and rec.depth_to >= rec.depth_from):
            _skip(skipped, name, f"layer {rec.depth_from:g}–{rec.depth_to:g} m is not within 0–{MAX_SURFACE_DEPTH_M} m")
            continue
        if rec.good.empty:
            counts = rec.hourly["flag"].value_counts().to_dict()
            _skip(skipped, name, f"no values with quality flag G (flags: {counts})")
            continue
        candidates.append(rec)
    # per station: the shallowest qualifying layer; ties -> most good values
    by_station: dict[str, list[StationRecord]] = {}
    for rec in candidates:
        by_station.setdefault(rec.station_id, []).append(rec)
    chosen: list[StationRecord] = []
    for sid, recs in sorted(by_station.items()):
        recs.sort(key=lambda r: (r.depth_to, r.depth_from, -len(r.good), r.sensor, r.source))
        chosen.append(recs[0])
        for r in recs[1:]:
            _skip(skipped, r.source, f"station {sid} already has a shallower/better layer "
                  f"({recs[0].depth_from:g}–{recs[0].depth_to:g} m, {recs[0].sensor})")
    if not chosen:
        raise InputError(os.fspath(source) if not isinstance(source, (list, tuple)) else "ISMN inputs",
                         f"no usable ISMN soil moisture series ({n_files} files read, {len(skipped)} skipped: "
                         + "; ".join(f"{Path(s['source']).name}: {s['reason']}" for s in skipped[:5]) + ").",
                         "pass ISMN data with sensors at 0–0.05 m and quality-flag G values.")
    dailies = [daily_means(r.hourly, min_hours) for r in chosen]
    starts = [d.index.min() for d in dailies if not d.empty]
    ends = [d.index.max() for d in dailies if not d.empty]
    time = pd.date_range(min(starts), max(ends), freq="D") if starts else pd.DatetimeIndex([])
    sm = np.full((len(chosen), time.size), np.nan, dtype=np.float32)
    nh = np.zeros((len(chosen), time.size), dtype=np.int16)
    for i, d in enumerate(dailies):
        if d.empty:
            continue
        pos = time.get_indexer(d.index)
        sm[i, pos] = d["sm"].to_numpy(dtype=np.float32)
        nh[i, pos] = d["n_hours"].to_numpy().astype(np.int16)
    for r, d in zip(chosen, dailies, strict=True):
        if d["sm"].notna().sum() == 0:
            _skip(skipped, r.source, f"kept, but no day has ≥ {min_hours} good hours", logging.WARNING)
    if skipped:
        log.warning("ISMN: %d station(s) kept, %d file(s)/sensor(s) skipped (see attrs['skipped'])",
                    len(chosen), len(skipped))
    not_good = {k: c for k, c in sorted(flag_counts.items()) if k != "G"}
    if not_good:
        log.info("ISMN: %d hourly value(s) not flagged G dropped, per flag: %s", sum(not_good.values()), not_good)
    ds = xr.Dataset(
        {"sm": (("station", "time"), sm, {"units": "m3 m-3", "long_name": "daily mean in-situ soil moisture",
                                          "comment": f"ISMN flag G only; NaN if fewer than {min_hours} hours"}),
         "n_hours": (("station", "time"), nh, {"long_name": "hours with a good value in the UTC day"})},
        coords={
            "station": np.array([r.station_id for r in chosen], dtype=str),
            "time": time.values.astype("datetime64[ns]"),
            "network": ("station", np.array([r.network for r in chosen], dtype=str)),
            "station_name": ("station", np.array([r.station for r in chosen], dtype=str)),
            "lat": ("station", np.array([r.lat for r in chosen], dtype=np.float64)),
            "lon": ("station", np.array([r.lon for r in chosen], dtype=np.float64)),
            "elevation": ("station", np.array([r.elevation for r in chosen], dtype=np.float64)),
            "depth_from": ("station", np.array([r.depth_from for r in chosen], dtype=np.float64)),
            "depth_to": ("station", np.array([r.depth_to for r in chosen], dtype=np.float64)),
            "sensor": ("station", np.array([r.sensor for r in chosen], dtype=str)),
        },
        attrs={"min_hours_per_day": int(min_hours), "skipped": json.dumps(skipped),
               "flag_counts": json.dumps(dict(sorted(flag_counts.items()))),
               "n_files_read": n_files, "source_files": json.dumps([r.source for r in chosen])},
    )
    return ds
