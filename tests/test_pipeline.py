"""``sm1km.Pipeline``: the table of stage functions, the run's result and its units (stages)."""

from __future__ import annotations

import json

import pytest

from sm1km import Pipeline
from sm1km.config import RunConfig
from sm1km.runtime.result import StageResult


def _cfg(root: str) -> RunConfig:
    return RunConfig.from_dict({"region": {"west": 0, "south": 45, "east": 1, "north": 46},
                                "period": {"start": "2020-04-01", "end": "2020-04-02"}, "store": {"root": root},
                                "cluster": {"kind": "synchronous"}})


def test_run_result_counts_stages_written_and_skipped(tmp_path):
    """A stage that finds nothing left to do (its own ``units_written == 0``) is a skipped unit."""
    p = Pipeline(_cfg(str(tmp_path / "store")))
    first = p.run(stages=("catalog",))
    assert isinstance(first, StageResult) and isinstance(first["catalog"], StageResult)
    assert first["catalog"]["collection"].endswith("catalog/collection.json")
    assert first.stats["units_total"] == first.stats["units_written"] == 1 and first.stats["units_skipped"] == 0
    assert first.stats["stages"]["catalog"]["units_written"] == 1  # only collection.json: no product yet
    again = p.run(stages=("catalog",))
    assert again.stats["units_written"] == 0 and again.stats["units_skipped"] == 1
    assert json.loads(json.dumps(again)) == {"catalog": dict(again["catalog"])}  # what `sm1km run` prints
    assert set(p.timings) == {"catalog"}


def test_single_stage_by_attribute_and_unknown_stage(tmp_path):
    p = Pipeline(_cfg(str(tmp_path / "store")))
    out = p.catalog()
    assert out.stats["units_total"] == 1
    with pytest.raises(KeyError):
        p.stage("bogus")
    with pytest.raises(AttributeError):
        p.bogus  # noqa: B018
