"""The one work-unit type: a block of a run's region and, optionally, of its time axis.

Every stage that writes a store region by region plans its tasks as :class:`WorkUnit` s: fuse
(one unit per ``fusion.space_chunk``² coarse cells, whole period), downscale and the truth metrics
(one per master shard: ``grid.tile_cells``² coarse cells × ``grid.time_block_days`` days),
aggregate (one per monthly chunk: a tile × 12 months). A unit is a few integers, so the driver can
plan millions of them lazily and ship each to a task for ~200 bytes.

Coordinates are **relative to the run's region**: coarse rows ``[r0, r1)`` and columns
``[c0, c1)`` (0.25° cells), ``factor`` pixels of the written store per coarse cell (1 for a 25 km
store, ``grid.factor`` for the 1 km master and monthly stores), and an optional time block
``[t0, t1)`` of the written store's time axis (days of the master, months of ``monthly.zarr``;
None when a task takes the whole period, as fusion does).

:attr:`WorkUnit.key` is the unit's ledger key, ``store.region_key`` of the store region it
writes (e.g. ``lat-0-10_lon-10-20_time-16-32``): the same strings the stages wrote before this
type existed, so a run resumed across versions skips the units it finished. It also names the
unit's dask task on the dashboard (``run_tasks`` uses an item's ``key``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from sm1km.core.grid import Region, tiles
from sm1km.storage.store import region_key


@dataclass(frozen=True)
class WorkUnit:
    """Coarse rows [r0, r1) × cols [c0, c1) of the region, time [t0, t1) (or all), ``factor`` px/cell."""

    r0: int
    r1: int
    c0: int
    c1: int
    t0: int | None = None
    t1: int | None = None
    factor: int = 1

    @property
    def coarse(self) -> tuple[slice, slice]:
        """(rows, cols) of the unit in arrays that cover the region at 0.25°."""
        return slice(self.r0, self.r1), slice(self.c0, self.c1)

    @property
    def fine(self) -> tuple[slice, slice]:
        """(rows, cols) of the unit in arrays of the written store (``factor`` pixels per cell)."""
        f = self.factor
        return slice(self.r0 * f, self.r1 * f), slice(self.c0 * f, self.c1 * f)

    @property
    def time(self) -> slice | None:
        """The time block, or None for the whole period."""
        return None if self.t0 is None else slice(self.t0, self.t1)

    @property
    def time_bounds(self) -> tuple[int, int]:
        """``(t0, t1)`` of a unit that has a time block (what downscale, the truth metrics and
        aggregate plan); ValueError for a whole-period unit."""
        if self.t0 is None or self.t1 is None:
            raise ValueError(f"work unit {self.key} has no time block")
        return self.t0, self.t1

    @property
    def region(self) -> dict[str, slice]:
        """The region of the written store, ``{"time"?, "lat", "lon"}`` (no time for a whole-period unit)."""
        y, x = self.fine
        out = {"lat": y, "lon": x}
        if self.t0 is not None:
            out["time"] = slice(self.t0, self.t1)
        return out

    @property
    def key(self) -> str:
        """Ledger key (``store.region_key`` of :attr:`region`) and dask task name."""
        return region_key(**self.region)

    def grown(self, cells: int, n_rows: int, n_cols: int) -> WorkUnit:
        """The unit grown by a halo of ``cells`` coarse cells on every side, clipped to the region
        (``n_rows × n_cols`` cells): the window a task reads when it needs neighbours."""
        return WorkUnit(max(self.r0 - cells, 0), min(self.r1 + cells, n_rows),
                        max(self.c0 - cells, 0), min(self.c1 + cells, n_cols), self.t0, self.t1, self.factor)

    def within(self, window: WorkUnit) -> tuple[slice, slice]:
        """(rows, cols) of this unit inside arrays read for ``window`` (at 0.25°), e.g. the inner block
        of a haloed read."""
        return slice(self.r0 - window.r0, self.r1 - window.r0), slice(self.c0 - window.c0, self.c1 - window.c0)


def plan_units(region: Region, tile_cells: int, time_blocks: Iterable[slice] | None = None,
               factor: int = 1) -> Iterator[WorkUnit]:
    """Units of ``region``: tiles of ``tile_cells²`` coarse cells (``grid.tiles``, row-major) and,
    per tile, every block of ``time_blocks`` in order (tile-major); one unit per tile without."""
    blocks = list(time_blocks) if time_blocks is not None else None
    for tile in tiles(region, tile_cells):
        rs, cs = tile.coarse_slices(region)
        if blocks is None:
            yield WorkUnit(rs.start, rs.stop, cs.start, cs.stop, factor=factor)
            continue
        for tb in blocks:
            yield WorkUnit(rs.start, rs.stop, cs.start, cs.stop, tb.start, tb.stop, factor)


def count_units(region: Region, tile_cells: int, n_time_blocks: int = 1) -> int:
    """How many units :func:`plan_units` yields, without planning them."""
    return (-(-region.n_rows // tile_cells)) * (-(-region.n_cols // tile_cells)) * n_time_blocks


__all__ = ["WorkUnit", "plan_units", "count_units"]
