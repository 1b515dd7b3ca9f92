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

import functools
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from sm1km.core.grid import Region
from sm1km.storage.store import Ledger, region_key


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


@dataclass(frozen=True)
class _Extent:
    """What :func:`plan_units` reads of a region: its size in coarse cells."""

    n_rows: int
    n_cols: int


def plan_units(region: Region | _Extent, tile_cells: int, time_blocks: Iterable[slice] | None = None,
               factor: int = 1) -> Iterator[WorkUnit]:
    """Units of ``region``: tiles of ``tile_cells²`` coarse cells (``grid.tiles``, row-major) and,
    per tile, every block of ``time_blocks`` in order (tile-major); one unit per tile without.

    Streamed: the tiles are computed as they are yielded (no list of tiles), so planning the
    3.9 million master shards of the global 2000-2020 run holds one unit at a time."""
    blocks = list(time_blocks) if time_blocks is not None else None
    tc = tile_cells
    if tc < 1:
        raise ValueError("tile_cells must be >= 1")
    for r in range(0, region.n_rows, tc):
        r1 = min(r + tc, region.n_rows)
        for c in range(0, region.n_cols, tc):
            c1 = min(c + tc, region.n_cols)
            if blocks is None:
                yield WorkUnit(r, r1, c, c1, factor=factor)
                continue
            for tb in blocks:
                yield WorkUnit(r, r1, c, c1, tb.start, tb.stop, factor)


_KEY_PART = re.compile(r"^(lat|lon|time)-(\d+)-(\d+)$")


@dataclass(frozen=True)
class UnitGrid:
    """The plan of one stage as arithmetic: tiles of ``tile_cells²`` cells of an ``n_rows × n_cols``
    region, per tile ``n_time`` steps in blocks of ``block`` (``n_time`` None: whole-period units),
    ``factor`` pixels per cell. :meth:`units` is :func:`plan_units` (same units, same order);
    :meth:`ordinal` maps a ledger key back to its unit's position in that order (None for a key that
    is no unit of this plan), so a ledger of millions of markers is checked against the plan with
    a bitmap of one bit per unit instead of a set of key strings (see ``sm1km.stages.dryrun``)."""

    n_rows: int
    n_cols: int
    tile_cells: int
    n_time: int | None = None
    block: int = 1
    factor: int = 1

    @classmethod
    def of(cls, region: Region, tile_cells: int, n_time: int | None = None, block: int = 1,
           factor: int = 1) -> UnitGrid:
        return cls(region.n_rows, region.n_cols, tile_cells, n_time, block if n_time is not None else 1, factor)

    @property
    def tile_rows(self) -> int:
        return -(-self.n_rows // self.tile_cells)

    @property
    def tile_cols(self) -> int:
        return -(-self.n_cols // self.tile_cells)

    @property
    def n_blocks(self) -> int:
        return 1 if self.n_time is None else -(-self.n_time // self.block)

    def __len__(self) -> int:
        return self.tile_rows * self.tile_cols * self.n_blocks

    def _blocks(self) -> list[slice] | None:
        if self.n_time is None:
            return None
        return [slice(t, min(t + self.block, self.n_time)) for t in range(0, self.n_time, self.block)]

    def units(self) -> Iterator[WorkUnit]:
        """Every unit, lazily, in :func:`plan_units` order (tile-major)."""
        region = _Extent(self.n_rows, self.n_cols)
        return plan_units(region, self.tile_cells, self._blocks(), self.factor)

    def ordinal(self, key: str) -> int | None:
        """Position in :meth:`units` of the unit whose ledger key is ``key``; None if none has it."""
        parts: dict[str, tuple[int, int]] = {}
        for part in key.split("_"):
            m = _KEY_PART.match(part)
            if m is None or m[1] in parts:
                return None
            parts[m[1]] = (int(m[2]), int(m[3]))
        if "lat" not in parts or "lon" not in parts or (("time" in parts) != (self.n_time is not None)):
            return None
        f, tc = self.factor, self.tile_cells
        (y0, y1), (x0, x1) = parts["lat"], parts["lon"]
        if y0 % (f * tc) or x0 % (f * tc):
            return None
        i, j = y0 // (f * tc), x0 // (f * tc)
        if i >= self.tile_rows or j >= self.tile_cols:
            return None
        if y1 != min(y0 // f + tc, self.n_rows) * f or x1 != min(x0 // f + tc, self.n_cols) * f:
            return None
        b = 0
        if self.n_time is not None:
            t0, t1 = parts["time"]
            if t0 % self.block or t0 >= self.n_time or t1 != min(t0 + self.block, self.n_time):
                return None
            b = t0 // self.block
        return (i * self.tile_cols + j) * self.n_blocks + b


@dataclass
class LedgerScan:
    """A ledger read against a plan (:func:`scan_ledger`): one byte per planned unit, not a set of keys."""

    grid: UnitGrid
    marked: np.ndarray            # bool, one per unit of ``grid`` in plan order
    others: list[str] = field(default_factory=list)  # markers that are no unit of the plan (blocks.json, ...)
    markers: int = 0              # every marker seen

    @property
    def n_done(self) -> int:
        return int(self.marked.sum())

    def has(self, key: str) -> bool:
        """Is the unit with ledger key ``key`` marked? (False for a key that is no unit of the plan.)"""
        i = self.grid.ordinal(key)
        return i is not None and bool(self.marked[i])


#: plans of at least this many units are listed row by row, concurrently, on an object store
PARALLEL_SCAN_UNITS = 100_000
#: row listings in flight at once
SCAN_WORKERS = 16


def _row_prefixes(grid: UnitGrid) -> list[str]:
    """The key prefix of every tile row of ``grid`` (``lat-<y0>-<y1>_``: unit keys sort ``lat``
    first)."""
    f, tc = grid.factor, grid.tile_cells
    return [f"lat-{r * f}-{min(r + tc, grid.n_rows) * f}_" for r in range(0, grid.n_rows, tc)]


def scan_ledger(ledger: Ledger, grid: UnitGrid, *, parallel_from: int = PARALLEL_SCAN_UNITS,
                workers: int = SCAN_WORKERS) -> LedgerScan:
    """Read ``ledger``'s markers page by page (:meth:`~sm1km.storage.store.Ledger.iter_keys`) into a
    bitmap over ``grid``: the driver holds one byte per unit (3.9 MB for the 3.9 million master
    shards of the global 2000-2020 run) instead of every key string (~400 MB as a Python set).

    On an object store, a plan of ``parallel_from`` units or more is listed one tile row at a
    time (prefix ``lat-<y0>-<y1>_``), ``workers`` rows at once, plus the names outside the
    ``lat-`` range: S3 pages 1000 keys per request, so the 5,492 pages of a finished global run
    take ~9 min one after the other at 100 ms each and ~35 s 16 at a time. Row listing only sees
    markers whose rows are the plan's (a marker of another tile size is not listed: it is no unit
    of this plan either)."""
    scan = LedgerScan(grid, np.zeros(len(grid), dtype=bool))

    def take(keys: Iterable[str]) -> None:
        for key in keys:
            scan.markers += 1
            i = grid.ordinal(key)
            if i is None:
                scan.others.append(key)
            else:
                scan.marked[i] = True

    if "://" not in ledger.url or ledger.url.startswith("file://") or len(grid) < parallel_from:
        take(ledger.iter_keys())
        return scan
    import concurrent.futures as cf

    def before_lat() -> list[str]:
        out = []
        for key in ledger.iter_keys():
            if key.startswith("lat-"):
                break
            out.append(key)
        return out

    def row(prefix: str) -> list[str]:
        return list(ledger.iter_keys(prefix=prefix))

    def after_lat() -> list[str]:
        return list(ledger.iter_keys(start_after="lat."))

    jobs: list[Callable[[], list[str]]] = [before_lat, after_lat]
    jobs += [functools.partial(row, p) for p in _row_prefixes(grid)]
    window = 2 * max(1, workers)  # rows listed but not yet taken: bounded (a row's keys, not the ledger's)
    with cf.ThreadPoolExecutor(max(1, workers)) as pool:
        for i in range(0, len(jobs), window):
            for fut in [pool.submit(job) for job in jobs[i:i + window]]:
                take(fut.result())
    return scan


def count_units(region: Region, tile_cells: int, n_time_blocks: int = 1) -> int:
    """How many units :func:`plan_units` yields, without planning them."""
    return (-(-region.n_rows // tile_cells)) * (-(-region.n_cols // tile_cells)) * n_time_blocks


__all__ = ["WorkUnit", "UnitGrid", "LedgerScan", "scan_ledger", "plan_units", "count_units"]
