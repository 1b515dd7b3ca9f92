"""What an ingest job is: the protocol every input store's job follows, its context, its tasks.

``sm1km ingest`` writes up to four stores (``inputs/cci.zarr``, ``inputs/era5.zarr``,
``inputs/predictors.zarr``, ``inputs/stations.zarr``), one :class:`IngestJob` each. A job runs in
three passes, and the stage runs each pass for *every* job before the next one starts:

1. :meth:`IngestJob.plan` (reads only): list and hash the input files, compare them with the
   job's :class:`~.index.IngestIndex` and decide the work units to do (days, time blocks, static
   rasters); problems are collected, not raised.
2. :meth:`IngestJob.stage` (the read pass; writes only under ``<root>/_staging/``): read and
   validate every unit to do into a staging array.
3. :meth:`IngestJob.write` (the write pass): template or longer time axis, one task per output
   chunk, attributes and consolidated metadata, the index last.

Why this shape: a bad input file must leave **every** store untouched and the run must name
**every** bad file at once, so all reading and validation (plan + stage, for all jobs) is done
before the first byte of any store is written; and an interrupted run must be safe to repeat,
so the index — the job's ledger — is written last. Jobs differ only in what a unit is and how it
is read; the passes, the staging area, the task runner (:func:`run_units`, the one runner of
:mod:`sm1km.runtime.runner`) and the error report (:func:`raise_problems`) are shared.

Tasks take one small frozen dataclass (named fields) and return one; an
:class:`~sm1km.errors.Sm1kmError` travels as itself — raised by a task (the runner hands it back
as the item's result) or collected inside a result (a task that reads many files reports each bad
file and still returns the digests of the good days).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from sm1km.config import RunConfig
from sm1km.core import grid
from sm1km.errors import ConfigError, InputError, ModelError, Sm1kmError, StoreError
from sm1km.runtime.runner import map_tasks

from .index import IngestIndex

log = logging.getLogger(__name__)


@dataclasses.dataclass
class IngestContext:
    """What every job of one ingest run shares."""

    cfg: RunConfig
    so: dict                 # storage options of store.root
    region: grid.Region      # the coarse (0.25°) region of the run
    factor: int              # fine cells per coarse cell
    overwrite: bool
    staging_root: str        # <root>/_staging/ingest-<token>/, removed at the end of the run
    budget: int              # bytes one read task may hold (rechunk planner)
    client: Any = None       # dask client, or None: tasks run in this process

    def band_region(self, rows: slice, cols: slice, factor: int | None = None) -> grid.Region:
        """The coarse region of a band given in (fine, with ``factor``) pixel rows/cols of the region."""
        f = factor or 1
        return grid.Region(self.region.row0 + rows.start // f, self.region.row0 + rows.stop // f,
                           self.region.col0 + cols.start // f, self.region.col0 + cols.stop // f)

    def index(self, store_name: str) -> IngestIndex:
        return IngestIndex(self.cfg.store.root, store_name, self.so)


@dataclasses.dataclass(frozen=True)
class UnitCounts:
    """A job's work units (coarse cubes: days; predictors: time blocks + static rasters; stations:
    the table): how many the store has, how many this run wrote, how many were already ingested."""

    total: int
    written: int

    @property
    def skipped(self) -> int:
        return self.total - self.written


@runtime_checkable
class IngestJob(Protocol):
    """One input store's ingest (see the module docstring for the three passes)."""

    store_name: str                 # "inputs/cci.zarr": the result's key and the index's folder
    url: str                        # the store's URL
    index_store: IngestIndex        # the job's ledger
    problems: list[Sm1kmError]      # every problem found so far (plan and stage collect, never raise)

    def plan(self) -> None:
        """Reads only: inputs, index, the work units to do (none: the store is up to date)."""

    def stage(self) -> None:
        """The read pass: read and validate the units to do into the staging area."""

    def write(self) -> None:
        """The write pass: the store (template, chunks, attributes, consolidated metadata), the index last."""

    def counts(self) -> UnitCounts:
        """This run's units (after :meth:`write`)."""


# --------------------------------------------------------------------------------------------
# tasks and their errors
# --------------------------------------------------------------------------------------------
def run_units(ctx: IngestContext, fn: Callable[[Any], Any], items: Sequence[Any], label: str) -> list[Any]:
    """``[fn(item) for item in items]`` on the run's client (or in-process), through the one runner.

    An Sm1kmError raised by a task is that item's result (``raise_errors=False``): the job collects
    it with :func:`task_errors` and the stage reports all of them at once.
    """
    if not items:
        return []
    log.info("ingest: %d %s task(s)", len(items), label)
    return map_tasks(ctx.client, fn, items, name=f"ingest-{label}", raise_errors=False)


def task_errors(results: Iterable[Any]) -> list[Sm1kmError]:
    """The errors of task results, in order: a raised error, or those a result collected (``.errors``)."""
    out: list[Sm1kmError] = []
    for r in results:
        if isinstance(r, Sm1kmError):
            out.append(r)
        else:
            out.extend(getattr(r, "errors", ()))
    return out


def succeeded(results: Iterable[Any]) -> list[Any]:
    """The results that are not a raised error."""
    return [r for r in results if not isinstance(r, Sm1kmError)]


_KINDS = (InputError, StoreError, ConfigError, ModelError)


def raise_problems(problems: Sequence[Sm1kmError]) -> None:
    """Raise one error naming every problem of the run (none: return).

    The first problem's class, where and fix; its problem followed by ``(N more problem(s): <file
    name>: <problem>; ...)`` listing up to five more. Every problem is logged.
    """
    if not problems:
        return
    for p in problems:
        log.error("ingest: %s: %s", p.where, p.problem)
    first = problems[0]
    cls = type(first) if type(first) in _KINDS else InputError
    if len(problems) == 1 and cls is type(first):
        raise first
    more = ""
    if len(problems) > 1:
        shown = "; ".join(f"{Path(p.where).name}: {p.problem}" for p in problems[1:6])
        more = f" ({len(problems) - 1} more problem(s): {shown}{'; …' if len(problems) > 6 else ''})"
    raise cls(first.where, first.problem + more, first.fix)


__all__ = ["IngestContext", "IngestJob", "UnitCounts", "run_units", "task_errors", "succeeded", "raise_problems"]
