"""What every stage returns: :class:`StageResult`.

A stage is ``stage(cfg, client=None, **options) -> StageResult``. The result *is* the mapping
``{name: url}`` of what the stage wrote (stores, report, catalog, exported files), so a notebook
can pass ``result["master"]`` straight to ``xarray.open_zarr``; ``stats`` holds the stage's
counters (units planned / written / skipped, rows, files, ...), which the CLI prints and the
stage-contract suite checks (a re-run writes nothing: ``units_written == 0``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class StageResult(dict):
    """``{name: url}`` of what a stage wrote, plus counters in ``.stats``."""

    def __init__(self, urls: Mapping[str, Any] | None = None, stats: Mapping[str, Any] | None = None):
        super().__init__(urls or {})
        self.stats: dict[str, Any] = dict(stats or {})

    def __repr__(self) -> str:
        return f"StageResult({dict(self)!r}, stats={self.stats!r})"

    def to_json(self) -> dict[str, Any]:
        """The printable form (``sm1km <stage>`` prints it): the URLs, and ``stats`` when there are any."""
        return {**self, "stats": self.stats} if self.stats else dict(self)


__all__ = ["StageResult"]
