"""The truth physics of a synthetic world: static landscape + a daily surface water balance.

A 0–5 cm soil layer per fine pixel, in relative saturation ``s`` between wilting point (0) and
porosity (1), so the truth ``θ = θw + s (θs − θw)`` always lies in [θw, θs]:

* rain: spatially correlated storms (large + convective scales), wet/dry Markov days, orographic
  enhancement; snow accumulates below 0 °C and melts above;
* infiltration with run-on in convergent terrain (high TWI), drainage above field capacity;
* drydown towards a wetness floor ``s_eq`` (higher in valleys, from TWI) with an e-folding time that
  shortens with air temperature and vegetation (NDVI × land-cover ET factor) and depends on texture;
* frozen soil (air temperature < 0 °C) keeps its water.

The predictors carry the information a downscaling model needs: texture (θs, θw) and TWI are
static, LST day−night contrast responds to ``s`` and NDVI to the 30-day wetness. A hidden
small-scale field modulates ``s_eq`` and the drydown time and appears in no predictor: the part of
the 1 km pattern no model can explain.

LST is confounded (``WorldParams.errors``): the day-time excess over air temperature scales with
the solar incidence of the terrain (slope and aspect at the ~10:30 overpass), a daily shortwave
anomaly and the daily wind speed; calm nights pool cold air in valleys. Clouds (LST nodata) follow
the day's storms and the previous day's rain, so gaps sit on wet days.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from sm1km.core.grid import FineGrid, Region, region_coords
from sm1km.synth import fields as F
from sm1km.synth.params import WorldParams

log = logging.getLogger(__name__)

# independent random streams: changing one component never shifts the others
STREAM_TERRAIN, STREAM_SOIL, STREAM_COVER, STREAM_HIDDEN, STREAM_WEATHER, STREAM_LST = range(6)
STREAM_CCI, STREAM_ERA5, STREAM_STATIONS, STREAM_PREDICTORS, STREAM_NDVI = range(10, 15)
STREAM_LST_CONFOUND, STREAM_DEM, STREAM_COVER_ERROR, STREAM_STATION_ERRORS = range(20, 24)


def rng_for(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(stream)]))


@dataclass
class Statics:
    """The static landscape on the fine grid (row 0 = north); NaN / code 17 over the sea."""

    params: WorldParams
    seed: int
    region: Region
    geo: F.Geometry
    elevation_m: np.ndarray
    land: np.ndarray
    slope_deg: np.ndarray
    twi: np.ndarray
    clay: np.ndarray  # mass fraction 0–1
    sand: np.ndarray
    porosity: np.ndarray  # θs m³/m³
    wilting: np.ndarray  # θw m³/m³
    land_cover: np.ndarray  # IGBP codes uint8
    forest_block: list[tuple[int, int]]  # coarse cells (row, col within the region) of closed forest
    hidden: np.ndarray  # unexplained small-scale heterogeneity (not in any predictor)
    s_eq: np.ndarray  # wetness floor (relative saturation)
    tau_factor: np.ndarray  # texture/hidden factor of the drydown time
    et_factor: np.ndarray  # land-cover transpiration factor
    runon: np.ndarray  # 0–1, convergent terrain gets more water
    vigour: np.ndarray  # static NDVI anomaly
    green_shift_days: np.ndarray  # later green-up at altitude
    normal: np.ndarray  # (3, ny, nx) unit surface normal (east, north, up) of the true terrain
    valley: np.ndarray  # 0–1, depth below the surrounding terrain (cold-air pools on calm nights)

    @property
    def factor(self) -> int:
        return self.params.factor

    @property
    def shape(self) -> tuple[int, int]:
        return self.land.shape

    @property
    def coarse_shape(self) -> tuple[int, int]:
        return (self.region.n_rows, self.region.n_cols)

    @property
    def cell_land_fraction(self) -> np.ndarray:
        return F.block_mean(self.land.astype(np.float64), self.factor)

    @property
    def cell_forest_fraction(self) -> np.ndarray:
        forest = np.isin(self.land_cover, F.FOREST_CLASSES).astype(np.float64)
        return F.block_mean(np.where(self.land, forest, np.nan), self.factor)

    @property
    def cell_dense_fraction(self) -> np.ndarray:
        """Fraction of closed evergreen forest (IGBP 1) per cell: what CCI flags as dense vegetation."""
        dense = (self.land_cover == F.LC_EVERGREEN_NEEDLELEAF).astype(np.float64)
        return F.block_mean(np.where(self.land, dense, np.nan), self.factor)

    @property
    def coarse_lat(self) -> np.ndarray:
        return region_coords(self.region)[0]

    @property
    def coarse_lon(self) -> np.ndarray:
        return region_coords(self.region)[1]


@dataclass
class Day:
    """One simulated day on the fine grid (NaN over the sea)."""

    date: dt.date
    in_period: bool
    theta: np.ndarray  # truth, m³/m³ float32
    s: np.ndarray  # relative saturation
    t_air_c: np.ndarray  # daily mean air temperature °C
    rain_mm: np.ndarray
    snow_mm: np.ndarray
    ndvi: np.ndarray  # daily (unobserved) NDVI
    lst_day_k: np.ndarray  # NaN under clouds
    lst_night_k: np.ndarray


def make_statics(params: WorldParams, seed: int) -> Statics:
    """Build the static landscape of a world (terrain, coast, soils, land cover, hidden heterogeneity)."""
    region = params.region
    lat, lon = region_coords(region, params.factor)
    geo = F.Geometry(lat=lat, lon=lon, factor=params.factor, per_deg=FineGrid(params.factor).per_deg)
    elev, land = F.terrain(rng_for(seed, STREAM_TERRAIN), geo, params.sea_fraction)
    slope = np.where(land, F.slope_deg(elev, geo), np.nan).astype(np.float32)
    twi = F.topographic_wetness(elev, land, geo)
    clay, sand = F.soils(rng_for(seed, STREAM_SOIL), geo, elev, twi, land)
    porosity, wilting = F.hydraulic_limits(clay, sand)
    lc, block = F.land_cover(rng_for(seed, STREAM_COVER), geo, elev, twi, land, params.factor)

    rh = rng_for(seed, STREAM_HIDDEN)
    hidden = F.smooth_noise(rh, geo.shape, geo.px(0.012))
    hidden2 = F.smooth_noise(rh, geo.shape, geo.px(0.03))
    vigour = F.smooth_noise(rh, geo.shape, geo.px(0.02))
    twi_n = F._standardise(twi, land)
    s_eq = np.clip(0.05 + 0.32 * F.sigmoid(1.7 * twi_n - 1.3) + 0.08 * hidden, 0.0, 0.6)
    tau_factor = np.clip((1.0 + 0.9 * (np.nan_to_num(clay) - 0.22) - 0.6 * (np.nan_to_num(sand) - 0.42))
                         * (1.0 + 0.25 * hidden2), 0.4, 2.5)
    et_table = np.zeros(256, np.float32)
    for code, row in F.LC_TABLE.items():
        et_table[code] = row[3]
    et_factor = et_table[lc]
    runon = F.sigmoid(1.5 * twi_n - 1.0)
    green_shift = np.clip(elev / 1000.0 * 18.0, 0, 45)
    normal = F.surface_normal(elev, geo)
    valley = np.clip(-(elev - F.gaussian_smooth(elev, geo.px(0.04))) / 120.0, 0.0, 1.0)

    def sea_nan(a):
        return np.where(land, a, np.nan).astype(np.float32)

    return Statics(
        params=params, seed=seed, region=region, geo=geo, elevation_m=elev, land=land, slope_deg=slope,
        twi=twi, clay=clay, sand=sand, porosity=sea_nan(porosity), wilting=sea_nan(wilting), land_cover=lc,
        forest_block=block, hidden=hidden, s_eq=sea_nan(s_eq), tau_factor=tau_factor.astype(np.float32),
        et_factor=et_factor, runon=runon.astype(np.float32), vigour=vigour, green_shift_days=green_shift.astype(np.float32),
        normal=normal, valley=np.where(land, valley, 0.0).astype(np.float32),
    )


def air_temperature_climatology(lat: np.ndarray, doy: int) -> np.ndarray:
    """Sea-level daily mean air temperature (°C): annual mean and amplitude from |latitude|."""
    alat = np.abs(lat)
    t_ann = 30.0 - 0.42 * alat
    amp = 1.5 + 0.2 * alat
    phase = np.where(lat >= 0, 20.0, 20.0 + 182.6)
    return t_ann - amp * np.cos(2.0 * np.pi * (doy - phase) / 365.25)


def sun_vector(lat_deg: np.ndarray, doy: int, local_hour: float = 10.5) -> np.ndarray:
    """(3, ny, 1) unit vector to the sun (east, north, up) at ``local_hour`` solar time (MODIS Terra ~10:30)."""
    phi = np.deg2rad(lat_deg)[:, None]
    decl = np.deg2rad(23.44) * np.sin(2.0 * np.pi * (284 + doy) / 365.0)
    h = np.deg2rad(15.0 * (local_hour - 12.0))
    cos_z = np.clip(np.sin(phi) * np.sin(decl) + np.cos(phi) * np.cos(decl) * np.cos(h), 0.05, 1.0)
    sin_z = np.sqrt(1.0 - cos_z**2)
    az = np.arctan2(np.sin(h), np.sin(phi) * np.cos(h) - np.cos(phi) * np.tan(decl)) + np.pi  # from north
    return np.stack([sin_z * np.sin(az), sin_z * np.cos(az), cos_z])


def _phenology(doy: float, shift: np.ndarray, lat: np.ndarray) -> np.ndarray:
    d = doy - np.where(lat >= 0, 0.0, 182.6)[:, None] - shift
    d = np.mod(d, 365.25)
    return F.sigmoid((d - 110.0) / 11.0) * (1.0 - F.sigmoid((d - 285.0) / 14.0))


def simulate(st: Statics) -> Iterator[Day]:
    """Run the water balance day by day from ``start - spin_up_days``; yields every day (spin-up too)."""
    p = st.params
    ny, nx = st.shape
    geo = st.geo
    land = st.land
    e = p.errors
    rw = rng_for(st.seed, STREAM_WEATHER)
    rl = rng_for(st.seed, STREAM_LST)
    rc = rng_for(st.seed, STREAM_LST_CONFOUND)
    wind_up = 1.0 + 0.3 * np.clip(st.elevation_m, 0, None) / 1000.0  # windier on the heights

    nmin = np.zeros(256, np.float32)
    nmax = np.zeros(256, np.float32)
    decid = np.zeros(256, bool)
    for code, row in F.LC_TABLE.items():
        nmin[code], nmax[code], decid[code] = row[0], row[1], row[2]
    lc = st.land_cover
    nmin_px, nmax_px, decid_px = nmin[lc], nmax[lc], decid[lc]

    lapse = -0.0065 * st.elevation_m
    orog = 1.0 + 0.5 * np.clip(st.elevation_m, 0, None) / 1000.0
    cap_mm = 50.0 * (st.porosity - st.wilting)  # water between θw and θs in the 0–5 cm layer
    s = np.clip(st.s_eq + 0.25 + 0.1 * rw.standard_normal((ny, nx)).astype(np.float32), 0.02, 0.95)
    s30 = s.copy()
    snow = np.zeros((ny, nx), np.float32)
    t_anom = np.zeros((ny, nx), np.float32)
    rain_prev = np.zeros((ny, nx), np.float32)
    wet = False

    sig_t = geo.px(0.8)
    start = p.start - dt.timedelta(days=p.spin_up_days)
    for k in range(p.spin_up_days + p.n_days):
        date = start + dt.timedelta(days=k)
        doy = date.timetuple().tm_yday
        # temperature: climatology + lapse rate + AR(1) synoptic anomaly
        t_anom = 0.75 * t_anom + np.sqrt(1 - 0.75**2) * 3.0 * F.smooth_noise(rw, (ny, nx), sig_t)
        t_air = (air_temperature_climatology(geo.lat, doy)[:, None] + lapse + t_anom).astype(np.float32)

        # rain: wet/dry Markov chain, storms at two scales, orographic enhancement
        wet = rw.random() < (0.6 if wet else 0.27)
        storm = 0.75 * F.smooth_noise(rw, (ny, nx), geo.px(0.25)) + 0.5 * F.smooth_noise(rw, (ny, nx), geo.px(0.03))
        thr = rw.uniform(-0.6, 0.9) if wet else rw.uniform(1.6, 2.6)
        intensity = rw.gamma(2.0, 5.0)
        precip = (intensity * np.clip(storm - thr, 0, None) * orog).astype(np.float32)
        frozen = t_air < 0.0
        snow += np.where(frozen, precip, 0.0)
        melt = np.where(frozen, 0.0, np.minimum(snow, 4.0 * np.clip(t_air, 0, None)))
        snow -= melt
        water_in = np.where(frozen, 0.0, precip + melt)

        # vegetation of the day (not observed directly; composites are written from it)
        green = _phenology(doy, st.green_shift_days, geo.lat)
        stress = np.clip((s30 - 0.15) / 0.5, 0, 1)
        seasonal = np.where(decid_px, green, 1.0)
        ndvi = nmin_px + (nmax_px - nmin_px) * seasonal * (0.72 + 0.28 * stress) + 0.03 * st.vigour
        ndvi = np.where(land, np.clip(ndvi, -0.1, 0.95), nmin_px).astype(np.float32)

        # water balance in relative saturation
        gain = water_in * (1.0 - 0.4 * s) * (1.0 + 0.5 * st.runon) / cap_mm
        s1 = np.minimum(s + gain, 1.0)
        s1 = s1 - 0.5 * np.clip(s1 - 0.78, 0, None)
        tau = 3.2 * st.tau_factor * np.exp(-0.055 * (t_air - 15.0)) / (0.45 + st.et_factor * np.clip(ndvi, 0, 1))
        decay = np.exp(-1.0 / np.maximum(tau, 0.3))
        s2 = np.where(s1 > st.s_eq, st.s_eq + (s1 - st.s_eq) * decay, s1 + 0.1 * (st.s_eq - s1))
        s = np.where(frozen, s, s2)
        s = np.where(land, np.clip(s, 0.0, 1.0), np.nan).astype(np.float32)
        s30 = np.where(land, s30 + (s - s30) / 20.0, np.nan).astype(np.float32)
        theta = (st.wilting + s * (st.porosity - st.wilting)).astype(np.float32)

        # land surface temperature: dry bare soil is hot by day, wet soil stays warm at night; the day-time
        # excess over air temperature also follows the terrain's solar incidence, a shortwave anomaly and wind
        veg = np.clip(ndvi, 0, 1)
        excess = 2.5 + 11.0 * (1.0 - s) * (1.0 - 0.6 * veg) + 2.0 * (1.0 - veg)
        sun = sun_vector(geo.lat, doy)
        incidence = np.clip((st.normal * sun).sum(axis=0) / sun[2], 0.0, 2.0)  # 1 on flat ground
        shortwave = 1.0 + 0.08 * F.smooth_noise(rc, (ny, nx), geo.px(0.2)) + 0.05 * rc.standard_normal()
        wind = np.clip(3.0 * np.exp(0.35 * F.smooth_noise(rc, (ny, nx), geo.px(0.3)) + 0.3 * rc.standard_normal())
                       * wind_up, 0.5, 15.0)
        excess = (excess * (1.0 + e.lst_radiation * (incidence - 1.0)) * (1.0 + e.lst_radiation * (shortwave - 1.0))
                  / np.maximum(1.0 + e.lst_wind * (wind - 3.0), 0.4))
        calm = np.exp(-wind / 2.0)
        lst_day = (t_air + 273.15 + excess + e.lst_noise_k * rl.standard_normal((ny, nx), dtype=np.float32))
        lst_night = (t_air + 273.15 - 6.5 + 3.5 * s + 1.0 * veg - e.lst_inversion_k * calm * st.valley
                     + 0.8 * e.lst_noise_k * rl.standard_normal((ny, nx), dtype=np.float32))
        lst_day = np.where(snow > 5.0, np.minimum(lst_day, 273.15 + 0.3 * np.clip(t_air, 0, None)), lst_day)
        cloud_score = (0.7 * F.smooth_noise(rl, (ny, nx), geo.px(0.1)) + e.cloud_rain_weight * np.clip(storm - thr, -1, 1)
                       + 0.5 * e.cloud_rain_weight * np.tanh(rain_prev / 5.0))
        cloud_frac = rl.uniform(0.35, 0.85) if wet else rl.uniform(0.05, 0.4)
        night_score = 0.6 * cloud_score + 0.8 * F.smooth_noise(rl, (ny, nx), geo.px(0.1))
        cloud_day = cloud_score > np.quantile(cloud_score, 1.0 - cloud_frac)
        cloud_night = night_score > np.quantile(night_score, 1.0 - cloud_frac)
        lst_day = np.where(land & ~cloud_day, lst_day, np.nan).astype(np.float32)
        lst_night = np.where(land & ~cloud_night, lst_night, np.nan).astype(np.float32)
        rain_prev = precip

        yield Day(date=date, in_period=k >= p.spin_up_days, theta=theta, s=s, t_air_c=t_air,
                  rain_mm=precip, snow_mm=snow.copy(), ndvi=ndvi, lst_day_k=lst_day, lst_night_k=lst_night)


@dataclass
class World:
    """A whole world in memory (small worlds only): statics plus the period's daily fields."""

    statics: Statics
    dates: list[dt.date]
    theta: np.ndarray  # (time, y, x) truth m³/m³
    t_air_c: np.ndarray
    rain_mm: np.ndarray
    ndvi: np.ndarray
    lst_day_k: np.ndarray
    lst_night_k: np.ndarray
    extras: dict = field(default_factory=dict)

    @property
    def theta_coarse(self) -> np.ndarray:
        return F.block_mean(self.theta, self.statics.factor)


def make_world(params: WorldParams | str, seed: int = 20240601) -> World:
    """Simulate a world fully in memory (for tests and notebooks; use :func:`write_world` for files)."""
    from sm1km.synth.params import preset

    if isinstance(params, str):
        params = preset(params)
    st = make_statics(params, seed)
    days = [d for d in simulate(st) if d.in_period]

    def stack(name):
        return np.stack([getattr(d, name) for d in days])

    return World(statics=st, dates=[d.date for d in days], theta=stack("theta"), t_air_c=stack("t_air_c"),
                 rain_mm=stack("rain_mm"), ndvi=stack("ndvi"), lst_day_k=stack("lst_day_k"),
                 lst_night_k=stack("lst_night_k"))
