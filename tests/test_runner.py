"""The one task runner (sm1km.runtime.runner) on a real distributed cluster and in-process."""

from __future__ import annotations

import functools
import os
import threading

import pytest

from sm1km.errors import InputError
from sm1km.runtime.runner import map_tasks, run_tasks


def _square(x: int) -> int:
    return x * x


def _fail_on(bad: int, counter: str, x: int) -> int:
    if x == bad:
        with open(counter, "a") as f:  # one line per attempt, also from another process
            f.write("x\n")
        raise InputError(f"/in/{x}.nc", "is broken.", "replace it.")
    return x


_LIVE = {"now": 0, "peak": 0}
_LIVE_LOCK = threading.Lock()


def _slow_count(x: int) -> int:
    import time

    with _LIVE_LOCK:
        _LIVE["now"] += 1
        _LIVE["peak"] = max(_LIVE["peak"], _LIVE["now"])
    time.sleep(0.02)
    with _LIVE_LOCK:
        _LIVE["now"] -= 1
    return x


@pytest.fixture(scope="module")
def thread_client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=4, processes=False, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        yield client


def test_in_process_results_in_item_order():
    assert list(run_tasks(None, _square, range(5))) == [0, 1, 4, 9, 16]
    assert map_tasks(None, _square, range(5)) == [0, 1, 4, 9, 16]


def test_cluster_results_complete_and_map_keeps_order(thread_client):
    assert sorted(run_tasks(thread_client, _square, range(40), name="sq")) == [x * x for x in range(40)]
    assert map_tasks(thread_client, _square, range(40), window=3) == [x * x for x in range(40)]


def test_items_are_consumed_lazily_within_the_window(thread_client):
    seen = []

    def items():
        for i in range(30):
            seen.append(i)
            yield i

    gen = run_tasks(thread_client, _slow_count, items(), window=4)
    next(gen)
    assert len(seen) <= 5  # the window plus the one submitted after the first result
    assert len(list(gen)) == 29
    assert _LIVE["peak"] <= 4


@pytest.mark.parametrize("use_cluster", [False, True])
def test_an_input_error_travels_as_itself_and_is_not_retried(tmp_path, thread_client, use_cluster):
    counter = str(tmp_path / "attempts")
    fn = functools.partial(_fail_on, 7, counter)
    with pytest.raises(InputError) as err:
        list(run_tasks(thread_client if use_cluster else None, fn, range(10), retries=3))
    assert err.value.where == "/in/7.nc"
    assert err.value.problem == "is broken."
    assert err.value.fix == "replace it."
    with open(counter) as f:
        assert len(f.read().splitlines()) == 1  # dask's retries are for transient faults, not bad input


def test_an_error_in_a_worker_process_keeps_class_and_fields(tmp_path):
    from distributed import Client, LocalCluster

    counter = str(tmp_path / "attempts")
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        with pytest.raises(InputError) as err:
            map_tasks(client, functools.partial(_fail_on, 2, counter), range(4))
    assert (err.value.where, err.value.fix) == ("/in/2.nc", "replace it.")
    assert os.path.exists(counter)


def test_errors_can_be_collected_instead_of_raised(tmp_path, thread_client):
    fn = functools.partial(_fail_on, 3, str(tmp_path / "attempts"))
    out = map_tasks(thread_client, fn, range(5), raise_errors=False)
    assert out[:3] == [0, 1, 2] and out[4] == 4
    assert isinstance(out[3], InputError) and out[3].where == "/in/3.nc"


def test_a_client_that_is_not_the_default_is_used():
    """A stage given an explicit client (not the default one, e.g. set_as_default=False, or one of
    several clients of a benchmark) must use that client's loop."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0") as cluster, \
            Client(cluster, set_as_default=False) as client:
        out = sorted(run_tasks(client, _square, range(7), window=2))
        assert map_tasks(client, functools.partial(_fail_on, -1, "unused"), range(3)) == [0, 1, 2]
    assert out == [0, 1, 4, 9, 16, 25, 36]


class _Keyed:
    def __init__(self, key: str, x: int):
        self.key, self.x = key, x


def _task_key(item: _Keyed) -> str:
    from distributed import get_worker

    return get_worker().get_current_task()


def test_an_items_key_names_its_dask_task(thread_client):
    items = [_Keyed("lat-0-10_lon-0-10_time-0-16", 1), _Keyed("lat-0-10_lon-10-20_time-0-16", 2)]
    keys = sorted(run_tasks(thread_client, _task_key, items, name="downscale_shard"))
    assert [k.rsplit("-", 1)[0] for k in keys] == ["downscale_shard-" + it.key for it in items]
    # map_tasks keeps the key too (its own index is only the fallback)
    keys = map_tasks(thread_client, _task_key, items, name="m")
    assert [k.rsplit("-", 1)[0] for k in keys] == ["m-" + it.key for it in items]


def _sleep_inverse(x: int) -> int:
    import time

    time.sleep(0.002 * (20 - x))  # later items finish first
    return x


def test_ordered_yields_in_item_order_from_a_cluster(thread_client):
    unordered = list(run_tasks(thread_client, _sleep_inverse, range(20), window=8))
    assert sorted(unordered) == list(range(20))
    assert list(run_tasks(thread_client, _sleep_inverse, range(20), window=8, ordered=True)) == list(range(20))
    assert list(run_tasks(thread_client, _sleep_inverse, iter(range(20)), window=1, ordered=True)) == list(range(20))
