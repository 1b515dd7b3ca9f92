"""Parameters of a synthetic world and the built-in presets (``demo``, ``medium``, ``tiny``)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass

from sm1km.core.grid import BBox, Region, snap_bbox
from sm1km.errors import ConfigError


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

    def __post_init__(self):
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
        return d

    @classmethod
    def from_dict(cls, d: dict) -> WorldParams:
        return cls(**d)

    def replace(self, **changes) -> WorldParams:
        return dataclasses.replace(self, **changes)


#: Built-in worlds. ``demo`` is the region/period of ``EXAMPLE_CONFIG`` (north Italy box, spring).
PRESETS: dict[str, WorldParams] = {
    "demo": WorldParams(name="demo"),
    "medium": WorldParams(bbox=(8.0, 43.0, 14.0, 49.0), start=dt.date(2020, 1, 1), n_days=366, factor=30,
                          n_stations=120, n_networks=4, era5_step_hours=6, name="medium"),
    "tiny": WorldParams(bbox=(10.0, 45.0, 11.0, 46.0), start=dt.date(2020, 4, 1), n_days=10, factor=10,
                        n_stations=8, n_networks=2, spin_up_days=15, name="tiny"),
}


def preset(name: str, **overrides) -> WorldParams:
    """A preset's parameters, optionally with some fields replaced."""
    if name not in PRESETS:
        raise ConfigError("--preset", f"unknown preset '{name}'.", f"use one of {', '.join(PRESETS)}.")
    return PRESETS[name].replace(**overrides) if overrides else PRESETS[name]
