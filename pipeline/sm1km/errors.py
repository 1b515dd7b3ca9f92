"""One exception family for everything a user can fix.

Every error carries *what* is wrong, *where* (file, key or URL) and *how to fix it*; the CLI
prints ``str(err)`` as one paragraph and exits with code 2 (no traceback).
"""

from __future__ import annotations


class Sm1kmError(Exception):
    """Base class: a problem the user can fix (bad input, bad config, unusable store)."""

    exit_code = 2

    def __init__(self, where: str, problem: str, fix: str | None = None):
        self.where = str(where)
        self.problem = problem
        self.fix = fix
        msg = f"{self.where}: {problem}"
        if fix:
            msg += f" Fix: {fix}"
        super().__init__(" ".join(msg.split()))  # one paragraph, whatever the wrapped exception printed

    def __reduce__(self):
        # picklable, so an error raised inside a dask task reaches the driver as itself
        return (type(self), (self.where, self.problem, self.fix))


class InputError(Sm1kmError):
    """An input file is unreadable, of the wrong kind, or inconsistent with the run."""


class ConfigError(Sm1kmError):
    """A run configuration key is unknown, missing or invalid."""


class StoreError(Sm1kmError):
    """An object store / Zarr store cannot be used (missing bucket, denied, locked, corrupt)."""


class ModelError(Sm1kmError):
    """A model artifact is missing, corrupt (hash mismatch) or has an incompatible feature schema."""
