"""The ingest job protocol's shared pieces, without a world: the one error report of a run and the
work-unit counts (the stage's ``StageResult.stats``)."""

from __future__ import annotations

import pickle

import pytest

from sm1km.core import grid
from sm1km.errors import ConfigError, InputError, Sm1kmError, StoreError
from sm1km.runtime.runner import map_tasks
from sm1km.stages.ingest.coarse import CoarseRead, CoarseReadTask
from sm1km.stages.ingest.job import UnitCounts, raise_problems, task_errors


def _bad(i: int) -> InputError:
    return InputError(f"/in/day{i}.nc", f"is broken ({i}).", "re-download it.")


def test_no_problem_raises_nothing():
    raise_problems([])


def test_one_problem_is_raised_as_itself():
    err = StoreError("s3://b/inputs/cci.zarr", "cannot take it.", "use another root.")
    with pytest.raises(StoreError) as info:
        raise_problems([err])
    assert info.value is err


def test_every_problem_in_one_message_first_class_where_and_fix():
    problems = [StoreError("/root/inputs/cci.zarr", "starts later.", "pass --overwrite.")] + [_bad(i) for i in range(7)]
    with pytest.raises(StoreError) as info:
        raise_problems(problems)
    e = info.value
    assert e.where == "/root/inputs/cci.zarr" and e.fix == "pass --overwrite."
    shown = "; ".join(f"day{i}.nc: is broken ({i})." for i in range(5))
    assert e.problem == f"starts later. (7 more problem(s): {shown}; …)"
    with pytest.raises(InputError, match=r"\(1 more problem\(s\): day1.nc: is broken \(1\).\) Fix: re-download it.$"):
        raise_problems([_bad(0), _bad(1)])


def test_an_error_outside_the_four_kinds_is_reported_as_an_input_error():
    class Odd(Sm1kmError):
        pass

    with pytest.raises(InputError, match="odd thing"):
        raise_problems([Odd("/x", "odd thing.")])
    with pytest.raises(ConfigError, match="1 more problem"):  # the four kinds keep their class
        raise_problems([ConfigError("inputs", "none."), _bad(1)])


def _fails_on_odd(x: int) -> int:
    if x % 2:
        raise _bad(x)
    return x


def test_task_errors_collects_raised_and_carried_errors_in_order():
    results = map_tasks(None, _fails_on_odd, range(4), raise_errors=False)
    carried = CoarseRead({}, {}, {}, errors=(_bad(9),), failed_days=("2020-01-01",))
    errs = task_errors(results + [carried])
    assert [e.where for e in errs] == ["/in/day1.nc", "/in/day3.nc", "/in/day9.nc"]


def test_tasks_and_results_pickle_with_their_errors():
    """Worker processes get the task dataclass and send the result (errors inside) back pickled."""
    task = CoarseReadTask("cci", "/s/cci.zarr", {}, ("2020-04-01",), ("/in/a.nc",), grid.Region(0, 4, 0, 4), 0,
                          slice(0, 4), slice(0, 4), (4, 4), None, False)
    assert pickle.loads(pickle.dumps(task)) == task
    res = pickle.loads(pickle.dumps(CoarseRead({"2020-04-01": 3}, {}, {}, (_bad(1),), ("2020-04-01",))))
    assert type(res.errors[0]) is InputError and str(res.errors[0]) == str(_bad(1))


def test_unit_counts():
    n = UnitCounts(total=14, written=6)
    assert (n.total, n.written, n.skipped) == (14, 6, 8)
