"""Finding and fingerprinting the raw input files of an ingest.

The config names inputs by path or glob (relative to the config file, resolved by the config);
every file found is hashed (sha256, one task per file) so the plan can tell unchanged files from
new or changed ones without decoding them (:mod:`.index`).
"""

from __future__ import annotations

import glob as _glob
import os
from pathlib import Path

from sm1km.errors import InputError, Sm1kmError
from sm1km.storage import store

from .job import IngestContext, run_units


def glob_files(pattern: str, what: str) -> list[str]:
    """The files a path or glob names (sorted); an InputError if there are none."""
    if _glob.has_magic(pattern):
        files = sorted(p for p in _glob.glob(pattern, recursive=True) if os.path.isfile(p))
    else:
        files = [pattern] if os.path.isfile(pattern) else []
    if not files:
        raise InputError(pattern, f"no {what} files match this path/pattern.",
                         f"check inputs.{what} in the config (paths are relative to the config file).")
    return files


def ismn_files(source: str) -> list[str]:
    """The files of an ISMN download: a folder (its ``python_metadata/`` left out), a zip or a glob."""
    if _glob.has_magic(source):
        hits = sorted(p for p in _glob.glob(source, recursive=True) if os.path.isfile(p))
    elif os.path.isdir(source):
        hits = sorted(str(p) for p in Path(source).rglob("*") if p.is_file() and "python_metadata" not in p.parts)
    elif os.path.isfile(source):
        hits = [source]
    else:
        hits = []
    if not hits:
        raise InputError(source, "no ISMN files here.", "check inputs.ismn (a download folder, zip or glob).")
    return hits


def sha256_task(path: str) -> str:
    """Task: the sha256 of one input file."""
    try:
        return store.sha256_file(path)
    except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        raise InputError(path, f"cannot read the file ({exc}).", "check the path and permissions.") from None


def hash_files(ctx: IngestContext, files: list[str], problems: list[Sm1kmError]) -> dict[str, str]:
    """``{path: sha256}`` of the files that could be read; the others' errors go to ``problems``."""
    out = {}
    for path, res in zip(files, run_units(ctx, sha256_task, files, "sha256")):
        if isinstance(res, Sm1kmError):
            problems.append(res)
        else:
            out[path] = res
    return out


__all__ = ["glob_files", "ismn_files", "sha256_task", "hash_files"]
