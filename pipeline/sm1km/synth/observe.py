"""Observing the truth: what each instrument of the synthetic world sees (pure numpy).

* CCI COMBINED: coarse-cell mean of the truth, dynamic range compressed (more under forest), cell
  bias, a vegetation- and season-dependent bias, daily noise; 30–70 % of land cells missing per day
  (swath stripes + flags: frozen, dense vegetation).
* ERA5: at the 0.25° ERA5 points (cell corners), neighbour-averaged, lagged in time, wetter, with
  a smooth bias, a seasonal bias (larger under forest) and AR(1) model error; sea points ~0 / tiny
  negative.
* Predictors: proxies of the causal fields as a user would download them: elevation, slope and TWI
  from a measured DEM (random error + canopy offset), a misclassified land-cover map, texture in %
  with pixel noise and a smooth regional error.
* NDVI 16-day composites from the daily NDVI; ISMN stations: truth of their pixel + network and
  station calibration (bias, gain), a time-varying daily point-scale (representativeness) error,
  drifts/breaks at a few stations that no quality flag marks, hourly noise, quality flags and gaps.

The error sizes are ``WorldParams.errors`` (:class:`sm1km.synth.params.ErrorModel`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter

from sm1km.core.grid import FineGrid
from sm1km.errors import ConfigError
from sm1km.synth import fields as F
from sm1km.synth.params import ErrorModel
from sm1km.synth.world import STREAM_COVER_ERROR, STREAM_DEM, STREAM_STATION_ERRORS, Statics, rng_for

EPOCH = dt.date(1970, 1, 1)
T0_SENTINEL = -3440586.5  # Julian date -999999 as days since 1970 (a real CCI quirk)

CCI_FILL_F = np.float32(-9999.0)
CCI_FLAG_FILL = np.int8(127)
CCI_FLAG_FROZEN, CCI_FLAG_DENSE_VEG, CCI_FLAG_NO_CONVERGENCE, CCI_FLAG_LOW_WEIGHT = 1, 2, 4, 16
CCI_SENSORS = np.array([1056, 1088, 1120, 1376, 1888, 800, 864], np.int16)
CCI_FREQBANDS = np.array([3, 34, 35, 66, 67], np.int16)


# ---------------------------------------------------------------------------------------------- CCI
@dataclass
class CciCells:
    """Per-cell constants of the CCI observation model."""

    land: np.ndarray  # bool: the cell is land in CCI (land fraction >= 0.5)
    forest_fraction: np.ndarray
    p_dense: np.ndarray  # daily probability of the dense-vegetation flag
    bias: np.ndarray
    uncertainty: np.ndarray
    swath_angle: float


def cci_cells(st: Statics, rng: np.random.Generator) -> CciCells:
    lf = st.cell_land_fraction
    ff = np.nan_to_num(st.cell_forest_fraction)
    dense = np.nan_to_num(st.cell_dense_fraction)
    p_dense = np.where(dense >= 0.6, 0.95, np.where(dense >= 0.4, 0.4, np.where(ff >= 0.85, 0.25, 0.0)))
    land = lf >= 0.5
    bias = 0.015 * rng.standard_normal(lf.shape)
    unc = 0.035 + 0.03 * ff + 0.005 * rng.random(lf.shape)
    return CciCells(land=land, forest_fraction=ff, p_dense=p_dense, bias=bias, uncertainty=unc, swath_angle=float(rng.uniform(0.5, 1.1)))


def seasonal_cycle(date: dt.date, peak_doy: float) -> float:
    """cos of the annual cycle, 1 on ``peak_doy`` and −1 half a year later."""
    return float(np.cos(2.0 * np.pi * (date.timetuple().tm_yday - peak_doy) / 365.25))


def cci_day(theta_c: np.ndarray, t_air_c: np.ndarray, cells: CciCells, date: dt.date, lon: np.ndarray,
            rng: np.random.Generator, ndvi_c: np.ndarray | None = None,
            errors: ErrorModel | None = None) -> dict[str, np.ndarray]:
    """All variables of one CCI COMBINED day on the region's cells, fill values included.

    ``theta_c``: coarse-cell mean truth; ``t_air_c``: coarse-cell mean air temperature (°C);
    ``ndvi_c``: coarse-cell mean NDVI of the day (vegetation-dependent bias, none if omitted).
    """
    e = errors if errors is not None else ErrorModel.ideal()
    shape = theta_c.shape
    land = cells.land & np.isfinite(theta_c)
    n_land = int(land.sum())
    day = (date - EPOCH).days

    frozen = land & (t_air_c < 0.0)
    dense = land & (rng.random(shape) < cells.p_dense)
    flag = np.zeros(shape, np.int8)
    flag[frozen] |= CCI_FLAG_FROZEN
    flag[dense] |= CCI_FLAG_DENSE_VEG
    missing = frozen | dense

    # swaths: stripes of missing cells, the rest up to a daily target of 33–62 % missing land cells
    target = rng.uniform(0.33, 0.62)
    rr, cc = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    a = cells.swath_angle
    stripe = np.mod((cc * np.cos(a) + rr * np.sin(a)) / rng.uniform(5.0, 9.0) + rng.random(), 1.0)
    score = stripe + 0.35 * rng.random(shape)
    need = int(round(target * n_land)) - int(missing.sum())
    free = land & ~missing
    if need > 0 and free.any():
        order = np.argsort(np.where(free, score, np.inf), axis=None, kind="stable")[:need]
        extra = np.zeros(shape, bool)
        extra.ravel()[order] = True
        missing |= extra
        kind = rng.random(shape)
        flag[extra & (kind < 0.25)] |= CCI_FLAG_LOW_WEIGHT
        flag[extra & (kind > 0.97)] |= CCI_FLAG_NO_CONVERGENCE
    valid = land & ~missing

    noise = (0.022 + 0.02 * cells.forest_fraction) * rng.standard_normal(shape)
    ff = cells.forest_fraction
    th = np.nan_to_num(theta_c)
    veg_bias = -e.cci_veg_bias * (np.nan_to_num(ndvi_c, nan=0.5) - 0.5) if ndvi_c is not None else 0.0
    season_bias = e.cci_seasonal_bias * (0.5 + ff) * seasonal_cycle(date, 200.0)  # wettest bias in July
    sm = np.clip(0.045 + 0.85 * th - e.cci_forest_gain_loss * ff * (th - 0.25) + cells.bias + veg_bias + season_bias
                 + noise, 0.0, 1.0)

    # observation time: night (01:30) / morning (09:30) local overpasses, or both
    dn = rng.choice(np.array([1, 2, 3], np.int8), size=shape, p=[0.3, 0.3, 0.4])
    local_h = np.where(dn == 2, 1.5, np.where(dn == 1, 9.5, 5.5))
    utc_h = local_h - lon[None, :] / 15.0
    t0 = np.clip(day + utc_h / 24.0 + rng.uniform(-0.02, 0.02, shape), day - 0.5, day + 0.5)
    observed = land & (valid | (flag & (CCI_FLAG_FROZEN | CCI_FLAG_DENSE_VEG)).astype(bool))
    sentinel = land & ~observed & (rng.random(shape) < 0.2)

    out: dict[str, np.ndarray] = {
        "sm": np.where(valid, sm, CCI_FILL_F).astype(np.float32),
        "sm_uncertainty": np.where(valid, cells.uncertainty, CCI_FILL_F).astype(np.float32),
        "flag": np.where(cells.land, flag, CCI_FLAG_FILL).astype(np.int8),
        "t0": np.where(observed, t0, np.where(sentinel, T0_SENTINEL, -9999.0)).astype(np.float64),
        "dnflag": np.where(observed, dn, 0).astype(np.int8),
        "mode": np.where(observed, np.where(dn == 3, 3, np.where(dn == 1, 1, 2)), 0).astype(np.int8),
        "sensor": np.where(observed, rng.choice(CCI_SENSORS, size=shape), 0).astype(np.int16),
        "freqbandID": np.where(observed, rng.choice(CCI_FREQBANDS, size=shape), 0).astype(np.int16),
    }
    return out


# --------------------------------------------------------------------------------------------- ERA5
@dataclass
class Era5Grid:
    """ERA5 points (0.25° multiples) covering the region plus one point of margin."""

    lat: np.ndarray  # descending
    lon: np.ndarray  # -180..180 (converted to 0–360 when written)
    lsm: np.ndarray  # land fraction 0–1 around each point
    land: np.ndarray  # lsm >= 0.5


def era5_grid(st: Statics) -> Era5Grid:
    b = st.region.bbox
    ny, nx = st.coarse_shape
    lat = b.north + 0.25 - 0.25 * np.arange(ny + 3)
    lon = b.west - 0.25 + 0.25 * np.arange(nx + 3)
    lsm = _corner_mean(st.cell_land_fraction, np.ones_like(st.cell_land_fraction))
    return Era5Grid(lat=lat, lon=lon, lsm=lsm, land=lsm >= 0.5)


def _corner_mean(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted mean of the (up to 4) cells touching each cell corner, with one corner of margin.

    ``values``/``weights`` are (..., ny, nx) cells; the result is (..., ny+3, nx+3) points, the
    outermost ring (beyond the region) copies its inner neighbour.
    """
    v = np.nan_to_num(values)
    w = np.where(np.isfinite(values), weights, 0.0)
    vp = np.pad(v * w, [(0, 0)] * (v.ndim - 2) + [(1, 1), (1, 1)])
    wp = np.pad(w, [(1, 1), (1, 1)]) if w.ndim == 2 else np.pad(w, [(0, 0)] * (w.ndim - 2) + [(1, 1), (1, 1)])
    num = vp[..., :-1, :-1] + vp[..., 1:, :-1] + vp[..., :-1, 1:] + vp[..., 1:, 1:]
    den = wp[..., :-1, :-1] + wp[..., 1:, :-1] + wp[..., :-1, 1:] + wp[..., 1:, 1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        inner = np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)
    return np.pad(inner, [(0, 0)] * (inner.ndim - 2) + [(1, 1), (1, 1)], mode="edge")


def era5_daily(theta_c: np.ndarray, st: Statics, grid: Era5Grid, rng: np.random.Generator,
               dates: list[dt.date] | None = None) -> np.ndarray:
    """Daily mean swvl1 (time, lat, lon) at the ERA5 points: smoother, lagged, wetter than the truth.

    With ``dates``, a seasonal bias of amplitude ``errors.era5_seasonal_bias`` × (0.5 + forest
    fraction) is added (wetter in early March, drier in early September).
    """
    lf = st.cell_land_fraction
    x = _corner_mean(theta_c, np.broadcast_to(lf, theta_c.shape))
    x = _fill_missing_points(x)
    smooth = np.empty_like(x)
    acc = x[0]
    for t in range(x.shape[0]):
        acc = acc + 0.55 * (x[t] - acc)
        smooth[t] = acc
    shape = grid.lsm.shape
    bias = 0.02 * F.smooth_noise(rng, shape, 2.0)
    err = np.zeros(shape)
    out = np.empty_like(smooth)
    ff = _corner_mean(st.cell_forest_fraction, np.ones_like(st.cell_land_fraction))
    amp = st.params.errors.era5_seasonal_bias * (0.5 + np.nan_to_num(ff))
    for t in range(x.shape[0]):
        err = 0.7 * err + np.sqrt(1 - 0.49) * 0.012 * F.smooth_noise(rng, shape, 1.5)
        season = amp * seasonal_cycle(dates[t], 62.0) if dates is not None else 0.0
        out[t] = np.clip(0.07 + 0.85 * smooth[t] + bias + err + season, 0.01, 0.65)
    return out


def _fill_missing_points(x: np.ndarray) -> np.ndarray:
    """Fill NaN points (no land cell around them) of each (lat, lon) slice with the slice's mean."""
    out = x.copy()
    for t in range(x.shape[0]):
        bad = ~np.isfinite(out[t])
        if bad.any():
            out[t][bad] = np.nanmean(out[t]) if np.isfinite(out[t]).any() else 0.2
    return out


def era5_hourly(daily: np.ndarray, grid: Era5Grid, step_hours: int, rng: np.random.Generator) -> np.ndarray:
    """Hourly (every ``step_hours``) values: linear between daily-mean anchors at 12 UTC, a small diurnal
    cycle (driest in the local afternoon) and ~0 / tiny negative values at sea points."""
    nd = daily.shape[0]
    hours = np.arange(0, 24, step_hours)
    out: np.ndarray = np.empty((nd * hours.size, *daily.shape[1:]), np.float64)
    prev = np.concatenate([daily[:1], daily[:-1]])
    nxt = np.concatenate([daily[1:], daily[-1:]])
    local_shift = grid.lon[None, :] / 15.0
    for d in range(nd):
        for i, h in enumerate(hours):
            if h < 12:
                v = prev[d] + (daily[d] - prev[d]) * (h + 12) / 24.0
            else:
                v = daily[d] + (nxt[d] - daily[d]) * (h - 12) / 24.0
            v = v - 0.002 * np.cos(2 * np.pi * (h + local_shift - 15.0) / 24.0)
            out[d * hours.size + i] = v
    sea = ~grid.land
    tiny = -rng.uniform(0.0, 3e-6, size=out.shape)
    tiny[rng.random(out.shape) < 0.5] = 0.0
    out[:, sea] = tiny[:, sea]
    return out


# ------------------------------------------------------------------------------------- predictors
def measured_dem(st: Statics) -> np.ndarray:
    """The DEM a user downloads: true terrain + random error (``dem_noise_m``, ~2 px correlation) + a
    canopy offset over forest (``dem_canopy_m``, radar DEMs see part of the canopy); 0 over the sea."""
    e = st.params.errors
    if e.dem_noise_m <= 0 and e.dem_canopy_m <= 0:
        return st.elevation_m
    rng = rng_for(st.seed, STREAM_DEM)
    forest = np.isin(st.land_cover, F.FOREST_CLASSES)
    noise = e.dem_noise_m * F.smooth_noise(rng, st.shape, 1.2)
    canopy = e.dem_canopy_m * forest * np.clip(0.7 + 0.3 * F.smooth_noise(rng, st.shape, 3.0), 0, None)
    return np.where(st.land, np.maximum(st.elevation_m + noise + canopy, 1.0), 0.0).astype(np.float32)


def predictor_statics(st: Statics, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Static predictor rasters as written (dtype and units of the files, nodata included).

    Proxies, not the causal fields: elevation/slope/TWI from :func:`measured_dem`, land cover
    misclassified in patches, texture with pixel noise and a smooth regional error.
    """
    e = st.params.errors
    land = st.land
    noise_c = 4.5 * F.smooth_noise(rng, st.shape, 1.5)
    noise_s = 5.5 * F.smooth_noise(rng, st.shape, 1.5)
    if e.texture_bias_pct > 0:
        noise_c = noise_c + e.texture_bias_pct * F.smooth_noise(rng, st.shape, st.geo.px(0.08))
        noise_s = noise_s + 1.2 * e.texture_bias_pct * F.smooth_noise(rng, st.shape, st.geo.px(0.08))
    clay_pct = np.clip(np.round(np.nan_to_num(st.clay) * 100 + noise_c), 1, 99)
    sand_pct = np.clip(np.round(np.nan_to_num(st.sand) * 100 + noise_s), 1, 99)
    dem = measured_dem(st)
    if dem is st.elevation_m:
        slope, twi = st.slope_deg, st.twi
    else:
        slope = F.slope_deg(dem, st.geo)
        twi = F.topographic_wetness(dem, land, st.geo)
    lc = F.misclassify(rng_for(st.seed, STREAM_COVER_ERROR), st.geo, st.land_cover, land, e.land_cover_error_fraction)
    return {
        "elevation": np.where(land, np.round(dem), 0).astype(np.int16),
        "slope": np.where(land, slope, -9999.0).astype(np.float32),
        "twi": np.where(land, twi, -9999.0).astype(np.float32),
        "clay": np.where(land, clay_pct, 255).astype(np.uint8),
        "sand": np.where(land, sand_pct, 255).astype(np.uint8),
        "land_cover": np.where(land, lc, F.LC_WATER).astype(np.uint8),
    }


def modis_composite_start(date: dt.date) -> dt.date:
    """First day of the MODIS 16-day composite period (DOY 1, 17, 33, … of each year) containing ``date``."""
    doy = date.timetuple().tm_yday
    return dt.date(date.year, 1, 1) + dt.timedelta(days=((doy - 1) // 16) * 16)


def ndvi_composite(mean_ndvi: np.ndarray, land: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """int16 NDVI ×10000 (MOD13 style) with nodata 32767 in ~1 % of land pixels (residual cloud)."""
    v = mean_ndvi + 0.025 * rng.standard_normal(mean_ndvi.shape)
    v = np.where(land, v, -0.05 + 0.02 * rng.standard_normal(mean_ndvi.shape))
    q = np.clip(np.round(v * 10000.0), -2000, 10000).astype(np.int16)
    speckle = land & (rng.random(q.shape) < 0.01)
    q[speckle] = 32767
    return q


# ----------------------------------------------------------------------------------------- stations
@dataclass
class Station:
    network: str
    name: str
    lat: float
    lon: float
    row: int  # fine pixel within the region
    col: int
    elevation: float
    sensor: str
    bias: float
    gain: float
    noise: float
    gap: tuple[int, int] | None = None  # [first, last) day indices without data
    late_start: int = 0
    deep_sensor: bool = False
    negative_spikes: bool = False
    network_bias: float = 0.0  # calibration shared by the network's stations
    network_gain: float = 1.0
    repr_sigma: float = 0.0  # point-scale (representativeness) error σ, m³/m³ (daily, AR(1))
    repr_memory_days: float = 5.0
    drift: float = 0.0  # linear drift reached at the record's end (from drift_start), m³/m³, flagged G
    drift_start: int = 0
    break_day: int | None = None  # a step change of break_size from this day on, flagged G
    break_size: float = 0.0

    @property
    def key(self) -> str:
        return f"{self.network}/{self.name}"


NETWORK_NAMES = ["AGRINET", "HILLNET", "RIVERNET", "COASTNET", "VALENET", "PLAINNET"]
NETWORK_SENSORS = ["ThetaProbe-ML2X", "Hydraprobe-II-Sdi-12", "5TM", "CS655", "EnviroSCAN", "TDR-100"]


def place_stations(st: Statics, rng: np.random.Generator) -> list[Station]:
    """Stations on distinct land pixels, in networks: the first clustered, the others spread out."""
    p = st.params
    n = p.n_stations
    if n == 0:
        return []
    g = FineGrid(p.factor)
    ny, nx = st.shape
    margin = max(1, p.factor // 6)
    ok = st.land.copy()
    ok[:margin, :] = ok[-margin:, :] = False
    ok[:, :margin] = ok[:, -margin:] = False
    ok &= st.elevation_m < 2200
    cand_r, cand_c = np.nonzero(ok)
    if cand_r.size < n:
        raise ConfigError("synth parameters", f"{n} stations do not fit on the {cand_r.size} usable land pixels.",
                          "ask for fewer stations or a larger region.")
    nets = [NETWORK_NAMES[i % len(NETWORK_NAMES)] + (str(i // len(NETWORK_NAMES)) if i >= len(NETWORK_NAMES) else "")
            for i in range(p.n_networks)]
    counts = np.full(p.n_networks, n // p.n_networks)
    counts[: n % p.n_networks] += 1
    e = p.errors
    re_ = rng_for(st.seed, STREAM_STATION_ERRORS)
    net_bias = e.network_bias_sigma * re_.standard_normal(p.n_networks)
    net_gain = np.clip(1.0 + e.network_gain_sigma * re_.standard_normal(p.n_networks), 0.6, 1.4)
    used: set[tuple[int, int]] = set()
    stations: list[Station] = []
    row0 = st.region.row0 * p.factor
    col0 = st.region.col0 * p.factor
    for k, (net, cnt) in enumerate(zip(nets, counts)):
        centre = rng.integers(cand_r.size)
        spread = 0.35 * min(ny, nx) if k == 0 else 10.0 * max(ny, nx)
        d2 = (cand_r - cand_r[centre]) ** 2 + (cand_c - cand_c[centre]) ** 2
        w = np.exp(-d2 / (2 * spread**2))
        w /= w.sum()
        picks = rng.choice(cand_r.size, size=min(cand_r.size, 4 * cnt + 8), replace=False, p=w)
        i = 0
        for idx in picks:
            if i >= cnt:
                break
            r, c = int(cand_r[idx]), int(cand_c[idx])
            if (r, c) in used:
                continue
            used.add((r, c))
            i += 1
            # the station is a point inside its pixel (not the pixel centre)
            fy, fx = rng.uniform(-0.35, 0.35, 2)
            lat = float(np.round(g.lat(row0 + r) - fy * g.res_deg, 5))
            lon = float(np.round(g.lon(col0 + c) + fx * g.res_deg, 5))
            stations.append(Station(
                network=net, name=f"{net[:2]}{i:02d}", lat=lat, lon=lon, row=r, col=c,
                elevation=float(np.round(max(0.5, st.elevation_m[r, c] + rng.normal(0, 4.0)), 2)),
                sensor=NETWORK_SENSORS[k % len(NETWORK_SENSORS)],
                bias=float(rng.normal(0.0, e.station_bias_sigma)), gain=float(rng.normal(1.0, e.station_gain_sigma)),
                noise=float(rng.uniform(0.004, 0.01)), network_bias=float(net_bias[k]), network_gain=float(net_gain[k]),
                repr_sigma=float(re_.uniform(*e.station_repr_sigma)), repr_memory_days=e.station_repr_memory_days,
            ))
    nd = p.n_days
    for s in stations:
        u = rng.random()
        if u < 0.2 and nd >= 8:
            length = int(rng.integers(2, max(3, min(12, nd // 3))))
            first = int(rng.integers(1, nd - length))
            s.gap = (first, first + length)
        elif u < 0.27 and nd >= 8:
            s.late_start = int(rng.integers(2, max(3, nd // 6)))
        s.deep_sensor = bool(rng.random() < 0.25)
    if len(stations) >= 2:
        for s in rng.choice(len(stations), size=2, replace=False):
            stations[int(s)].negative_spikes = True
    # a few stations drift or break without any quality flag saying so
    n_bad = int(round(e.drift_break_fraction * len(stations)))
    if e.drift_break_fraction > 0 and len(stations) >= 5 and nd >= 8:
        n_bad = max(1, n_bad)
    for i in (re_.choice(len(stations), size=n_bad, replace=False) if n_bad else []):
        s = stations[int(i)]
        size = float(re_.uniform(*e.drift_break_size) * re_.choice([-1.0, 1.0]))
        day = int(re_.integers(int(0.2 * nd), max(int(0.2 * nd) + 1, int(0.8 * nd))))
        if re_.random() < 0.5:
            s.drift, s.drift_start = size, day // 2
        else:
            s.break_day, s.break_size = day, size
    return stations


def station_daily(s: Station, theta: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The station's daily reading (before hourly noise) from its pixel's daily truth ``theta``.

    Network and station calibration around the pixel's mean, the point-scale error (AR(1) with memory
    ``repr_memory_days``, σ = ``repr_sigma``·(0.5 + relative wetness)), then drift and break.
    """
    nd = theta.shape[0]
    mean = float(np.nanmean(theta))
    daily = s.network_bias + s.bias + mean + s.network_gain * s.gain * (theta - mean)
    if s.repr_sigma > 0:
        phi = float(np.exp(-1.0 / s.repr_memory_days))
        ar = lfilter([np.sqrt(1 - phi**2)], [1.0, -phi], rng.standard_normal(nd))
        lo, hi = float(np.nanmin(theta)), float(np.nanmax(theta))
        wet = (theta - lo) / max(hi - lo, 1e-6)
        daily = daily + s.repr_sigma * (0.5 + wet) * ar
    t = np.arange(nd)
    if s.drift != 0.0:
        daily = daily + s.drift * np.clip((t - s.drift_start) / max(nd - 1 - s.drift_start, 1), 0.0, 1.0)
    if s.break_day is not None:
        daily = daily + np.where(t >= s.break_day, s.break_size, 0.0)
    return daily


def station_hourly(s: Station, theta: np.ndarray, t_air: np.ndarray, porosity: float, rng: np.random.Generator,
                   depth: str = "surface") -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Hourly values for one sensor: (hour index since period start, values, ISMN quality flags).

    ``theta``/``t_air``: the daily truth and air temperature of the station's pixel over the period.
    Hours inside gaps (and ~1 % random hours) are absent, as in real ISMN files.
    """
    nd: int = theta.shape[0]
    mean = float(np.nanmean(theta))
    daily = station_daily(s, theta, rng)
    if depth == "deep":  # a 0.20 m sensor: slower, damped
        sm = lfilter([0.2], [1.0, -0.8], daily - daily[0]) + daily[0]
        daily = 0.8 * sm + 0.2 * mean + 0.03
    hours = np.arange(nd * 24)
    day = hours // 24
    hod = hours % 24
    ar = lfilter([np.sqrt(1 - 0.81)], [1.0, -0.9], rng.standard_normal(hours.size))
    v = daily[day] - 0.004 * np.cos(2 * np.pi * (hod - 3.0) / 24.0) + s.noise * ar
    v = np.round(np.clip(v, 0.005, 0.65), 4)

    flags: list[list[str]] = [[] for _ in range(hours.size)]
    for i in np.nonzero(t_air[day] < 0.0)[0]:
        flags[i].append("D03")
    for d in np.nonzero(rng.random(nd) < 0.02)[0]:
        start = int(d) * 24 + int(rng.integers(0, 20))
        for hour in range(start, min(start + int(rng.integers(2, 6)), hours.size)):
            flags[hour].append("D05")
    if s.negative_spikes and depth == "surface":
        start = int(rng.integers(0, hours.size - 3))
        for hour in range(start, start + 3):
            v[hour] = -round(float(rng.uniform(0.001, 0.01)), 4)
            flags[hour].insert(0, "C01")
    over = v > porosity
    for i in np.nonzero(over)[0]:
        flags[i].insert(0, "C03")

    keep = rng.random(hours.size) >= 0.01
    if s.gap is not None:
        keep &= ~((day >= s.gap[0]) & (day < s.gap[1]))
    keep &= day >= s.late_start
    flag_str = [",".join(f) if f else "G" for f in flags]
    idx = np.nonzero(keep)[0]
    return hours[idx], v[idx], [flag_str[i] for i in idx]
