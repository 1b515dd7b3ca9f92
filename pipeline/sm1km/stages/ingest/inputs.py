"""Finding and fingerprinting the raw input files of an ingest.

The config names inputs by local path or glob (relative to the config file, resolved by the
config), ``s3://`` glob, list of paths/URLs or ``{date:%Y%m%d}`` URL template
(:mod:`sm1km.storage.input_files`); every file found is hashed (sha256, one task per file,
streamed on the worker — no local copy) so the plan can tell unchanged files from new or changed
ones without decoding them (:mod:`.index`). Tasks get URLs and :func:`input_options`, never open
files; the index and attrs record file names (:func:`~sm1km.storage.input_files.basename`), never
query strings.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Sequence

from sm1km.config import RunConfig
from sm1km.errors import Sm1kmError
from sm1km.storage import input_files
from sm1km.storage.input_files import InputOptions

from .job import IngestContext, run_units


def input_options(cfg: RunConfig) -> InputOptions:
    """How workers reach remote inputs: ``inputs.storage`` if given, else the store's S3 options."""
    st = cfg.inputs.storage
    if st is not None:
        return InputOptions(st.storage_options(), st.http_timeout_s)
    so = cfg.store.storage_options()
    if not so:  # a local store: s3:// inputs on AWS (or the environment's endpoint)
        so = {"anon": cfg.store.anon, **({"endpoint_url": cfg.store.endpoint_url} if cfg.store.endpoint_url else {})}
    return InputOptions(so)


def period_days(cfg: RunConfig, lead_in: int = 0) -> list[dt.date]:
    """The days a ``{date}`` template is filled with: the period, ``lead_in`` days before it too."""
    first = cfg.period.start - dt.timedelta(days=lead_in)
    return [first + dt.timedelta(days=k) for k in range((cfg.period.last_day - first).days + 1)]


def _days(cfg: RunConfig, days: Iterable[dt.date] | None) -> list[dt.date] | None:
    if days is not None:
        return list(days)
    if cfg.period.is_latest:
        return None
    return period_days(cfg)


def glob_files(pattern: str | Sequence[str], what: str, cfg: RunConfig | None = None,
               days: Iterable[dt.date] | None = None) -> list[str]:
    """The files an ``inputs.*`` entry names (each part sorted); an InputError if there are none.

    ``cfg`` gives the storage options of remote inputs and the days a template is filled with."""
    opts = input_options(cfg) if cfg is not None else None
    return input_files.resolve(pattern, what, opts, days=_days(cfg, days) if cfg is not None else days)


def ismn_files(source: str | Sequence[str], cfg: RunConfig | None = None) -> list[str]:
    """The files of an ISMN download: a folder or ``s3://`` prefix (its ``python_metadata/`` left
    out), a zip, a glob, or a list of them."""
    opts = input_options(cfg) if cfg is not None else None
    return input_files.resolve(source, "ismn", opts, tree=True)


@dataclasses.dataclass(frozen=True)
class HashTask:
    url: str
    opts: InputOptions


def sha256_task(task: HashTask | str) -> str:
    """Task: the sha256 of one input file (streamed; remote files are not copied)."""
    if isinstance(task, str):
        return input_files.sha256(task)
    return input_files.sha256(task.url, task.opts)


def hash_files(ctx: IngestContext, files: list[str], problems: list[Sm1kmError]) -> dict[str, str]:
    """``{path: sha256}`` of the files that could be read; the others' errors go to ``problems``."""
    opts = input_options(ctx.cfg)
    out = {}
    for path, res in zip(files, run_units(ctx, sha256_task, [HashTask(f, opts) for f in files], "sha256")):
        if isinstance(res, Sm1kmError):
            problems.append(res)
        else:
            out[path] = res
    return out


__all__ = ["period_days", "glob_files", "ismn_files", "sha256_task", "hash_files", "input_options", "HashTask"]
