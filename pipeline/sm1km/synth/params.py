"""Parameters of a synthetic world and the built-in presets (``demo``, ``medium``, ``tiny``, ``multiyear``).

:class:`WorldParams` fixes the size, period and grid; its ``errors`` (:class:`ErrorModel`) fixes how far
each instrument and predictor is from the truth. The defaults are the realistic error structure of
issue [16] (point-scale station error, network calibration, drifts and breaks, confounded LST,
proxy predictors, seasonal and vegetation-dependent CCI/ERA5 bias); ``ErrorModel.ideal()`` turns
the added structure off (stations and predictors close to the truth, as the first worlds were).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass

from sm1km.core.grid import BBox, Region, snap_bbox
from sm1km.errors import ConfigError


@dataclass(frozen=True)
class ErrorModel:
    """How far each observation and predictor of the world is from the truth (documented defaults).

    Stations (ISMN): a station reads ``bias_net + bias_st + mean + gain_net·gain_st·(θ_px − mean) + e_t``
    where ``θ_px`` is its 1 km pixel's truth and ``e_t`` a daily AR(1) point-scale
    (representativeness) error with memory ``station_repr_memory_days`` and standard deviation
    ``σ_i·(0.5 + w_t)``: ``σ_i`` drawn per station in ``station_repr_sigma``, ``w_t`` in [0, 1] the
    pixel's relative wetness (point-scale spread grows with wetness). ``bias_net``/``gain_net`` are
    shared by a network (one sensor type, one calibration). A fraction ``drift_break_fraction`` of
    the stations (at least one when there are ≥ 5) drift linearly or jump once by
    ``drift_break_size`` (either sign) with every value still flagged ``G``.

    LST: the day-time excess over air temperature is scaled by the terrain's solar incidence
    (slope/aspect, ``lst_radiation``), a daily shortwave anomaly and the daily wind speed
    (``lst_wind`` per m/s); calm nights pool cold air in valleys (``lst_inversion_k``); white noise
    ``lst_noise_k``. Cloud gaps (nodata) are more likely on wet days and after rain
    (``cloud_rain_weight``).

    Predictors: elevation, slope and TWI come from a measured DEM (random error ``dem_noise_m`` and
    a canopy offset ``dem_canopy_m`` over forest), not from the terrain the truth uses; land cover is
    misclassified in patches covering ``land_cover_error_fraction`` of land; clay/sand carry a
    smooth regional error ``texture_bias_pct`` (percent) on top of the pixel noise.

    CCI/ERA5: CCI's dynamic range shrinks with forest fraction (``cci_forest_gain_loss``) and its
    bias follows the cell's vegetation of the day (``cci_veg_bias``·(NDVI − 0.5)) and the season
    (``cci_seasonal_bias``, larger under forest); ERA5 carries a seasonal bias (``era5_seasonal_bias``,
    wetter in late winter, drier in late summer, larger under forest).
    """

    station_repr_sigma: tuple[float, float] = (0.02, 0.04)
    station_repr_memory_days: float = 5.0
    station_bias_sigma: float = 0.015
    station_gain_sigma: float = 0.08
    network_bias_sigma: float = 0.02
    network_gain_sigma: float = 0.10
    drift_break_fraction: float = 0.10
    drift_break_size: tuple[float, float] = (0.03, 0.06)
    lst_noise_k: float = 1.5
    lst_radiation: float = 0.8
    lst_wind: float = 0.08
    lst_inversion_k: float = 2.5
    cloud_rain_weight: float = 0.6
    dem_noise_m: float = 4.0
    dem_canopy_m: float = 8.0
    land_cover_error_fraction: float = 0.15
    texture_bias_pct: float = 6.0
    cci_forest_gain_loss: float = 0.25
    cci_veg_bias: float = 0.06
    cci_seasonal_bias: float = 0.015
    era5_seasonal_bias: float = 0.02

    def __post_init__(self):
        for name in ("station_repr_sigma", "drift_break_size"):
            v = tuple(float(x) for x in getattr(self, name))
            object.__setattr__(self, name, v)
            if len(v) != 2 or not 0.0 <= v[0] <= v[1] <= 0.5:
                raise ConfigError("synth parameters", f"errors.{name} must be (low, high) with 0 <= low <= high <= 0.5.",
                                  "fix the ErrorModel value.")
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, float) and not (0.0 <= v <= 100.0):
                raise ConfigError("synth parameters", f"errors.{f.name} must be in 0..100.", "fix the ErrorModel value.")
        if self.drift_break_fraction > 1.0 or self.land_cover_error_fraction > 0.9 or self.station_repr_memory_days < 0.1:
            raise ConfigError("synth parameters", "errors: fractions must be <= 1 (land cover <= 0.9), memory >= 0.1 day.",
                              "fix the ErrorModel value.")

    @classmethod
    def ideal(cls) -> ErrorModel:
        """No added error structure: stations ≈ their pixel (small bias, gain, hourly noise), clean proxies."""
        return cls(station_repr_sigma=(0.0, 0.0), station_bias_sigma=0.02, station_gain_sigma=0.12,
                   network_bias_sigma=0.0, network_gain_sigma=0.0, drift_break_fraction=0.0, lst_noise_k=1.0,
                   lst_radiation=0.0, lst_wind=0.0, lst_inversion_k=0.0, cloud_rain_weight=0.6, dem_noise_m=0.0,
                   dem_canopy_m=0.0, land_cover_error_fraction=0.0, texture_bias_pct=0.0, cci_forest_gain_loss=0.0,
                   cci_veg_bias=0.0, cci_seasonal_bias=0.0, era5_seasonal_bias=0.0)

    @classmethod
    def from_dict(cls, d: dict) -> ErrorModel:
        return cls(**d)


@dataclass(frozen=True)
class WorldParams:
    """Everything that shapes a world besides the seed.

    ``bbox`` (west, south, east, north) is snapped outward to whole 0.25° cells; ``factor`` is the
    number of fine pixels per 0.25° cell side (30 → 1/120° ≈ 0.93 km).
    """

    bbox: tuple[float, float, float, float] = (10.0, 44.0, 14.0, 48.0)
    start: dt.date = dt.date(2020, 4, 1)
    n_days: int = 90
    factor: int = 30
    n_stations: int = 40
    n_networks: int = 3
    spin_up_days: int = 30
    era5_step_hours: int = 1
    tile_cells: int = 4
    time_block_days: int = 128
    sea_fraction: float = 0.10
    name: str = "synthetic-world"
    errors: ErrorModel = dataclasses.field(default_factory=ErrorModel)

    def __post_init__(self):
        if isinstance(self.errors, dict):
            object.__setattr__(self, "errors", ErrorModel.from_dict(self.errors))
        if isinstance(self.start, str):
            object.__setattr__(self, "start", dt.date.fromisoformat(self.start))
        object.__setattr__(self, "bbox", tuple(float(v) for v in self.bbox))
        checks = [
            (len(self.bbox) == 4, "bbox must be (west, south, east, north)"),
            (1 <= self.n_days <= 3660, "n_days must be in 1..3660"),
            (isinstance(self.factor, int) and 2 <= self.factor <= 240, "factor must be an integer in 2..240"),
            (0 <= self.n_stations <= 5000, "n_stations must be in 0..5000"),
            (1 <= self.n_networks <= 26, "n_networks must be in 1..26"),
            (0 <= self.spin_up_days <= 365, "spin_up_days must be in 0..365"),
            (self.era5_step_hours in (1, 2, 3, 4, 6, 8, 12, 24), "era5_step_hours must divide 24"),
            (self.tile_cells >= 1 and self.time_block_days >= 1, "tile_cells and time_block_days must be >= 1"),
            (0.0 <= self.sea_fraction <= 0.5, "sea_fraction must be in 0..0.5"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError("synth parameters", msg + ".", "fix the WorldParams value.")
        try:
            reg = self.region
        except ValueError as exc:
            raise ConfigError("synth parameters", f"invalid bbox {self.bbox}: {exc}.", "give west<east, south<north.") from None
        if reg.n_rows < 2 or reg.n_cols < 2:
            raise ConfigError("synth parameters", "the region must span at least 2×2 cells of 0.25°.",
                              "enlarge the bbox.")

    @property
    def region(self) -> Region:
        return snap_bbox(BBox(*self.bbox))

    @property
    def end(self) -> dt.date:
        return self.start + dt.timedelta(days=self.n_days - 1)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["start"] = self.start.isoformat()
        d["bbox"] = list(self.bbox)
        d["errors"] = {k: list(v) if isinstance(v, tuple) else v for k, v in d["errors"].items()}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> WorldParams:
        return cls(**d)

    def replace(self, **changes) -> WorldParams:
        return dataclasses.replace(self, **changes)


#: Built-in worlds. ``demo`` is the region/period of ``EXAMPLE_CONFIG`` (north Italy box, spring);
#: ``multiyear`` spans 2019-2020 on a small, coarse (factor 10) region.
PRESETS: dict[str, WorldParams] = {
    "demo": WorldParams(name="demo"),
    "medium": WorldParams(bbox=(8.0, 43.0, 14.0, 49.0), start=dt.date(2020, 1, 1), n_days=366, factor=30,
                          n_stations=120, n_networks=4, era5_step_hours=6, name="medium"),
    "tiny": WorldParams(bbox=(10.0, 45.0, 11.0, 46.0), start=dt.date(2020, 4, 1), n_days=10, factor=10,
                        n_stations=8, n_networks=2, spin_up_days=15, name="tiny"),
    # two whole years: year-held-out CV has a year to hold out
    "multiyear": WorldParams(bbox=(10.0, 45.0, 12.0, 47.0), start=dt.date(2019, 1, 1), n_days=731, factor=10,
                             n_stations=30, n_networks=3, era5_step_hours=6, name="multiyear"),
}


def preset(name: str, **overrides) -> WorldParams:
    """A preset's parameters, optionally with some fields replaced."""
    if name not in PRESETS:
        raise ConfigError("--preset", f"unknown preset '{name}'.", f"use one of {', '.join(PRESETS)}.")
    return PRESETS[name].replace(**overrides) if overrides else PRESETS[name]
