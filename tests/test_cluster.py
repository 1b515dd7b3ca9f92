"""The cluster factory ``make_client(cfg)`` with real dask: a LocalCluster sized from the config,
an existing scheduler by address (``$DASK_SCHEDULER_ADDRESS``, as in a DaskJob runner pod),
synchronous mode, and the kubernetes kind failing cleanly where there is no Kubernetes API."""

from __future__ import annotations

import dask
import pytest
import yaml

from sm1km.config import EXAMPLE_CONFIG, RunConfig
from sm1km.errors import ConfigError
from sm1km.runtime.cluster import make_client


def make_cfg(**cluster) -> RunConfig:
    data = yaml.safe_load(EXAMPLE_CONFIG)
    data["cluster"] = cluster
    return RunConfig.from_dict(data)


def _double(x):
    return 2 * x


@pytest.mark.slow
def test_local_cluster_is_sized_from_config():
    cfg = make_cfg(kind="local", n_workers=1, threads_per_worker=3, memory_limit="1GiB")  # not the defaults
    with make_client(cfg) as client:
        workers = client.scheduler_info()["workers"].values()
        assert len(workers) == 1
        assert {w["nthreads"] for w in workers} == {3}
        assert {w["memory_limit"] for w in workers} == {2**30}
        assert client.scheduler.address.startswith("tcp://127.0.0.1:")
        assert client.submit(_double, 21).result() == 42
        assert client.dashboard_link
    assert client.status == "closed"


@pytest.fixture
def scheduler():
    """A real scheduler with one worker on loopback (what a DaskCluster's Service points at)."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp://", host="127.0.0.1",
                      dashboard_address=":0") as cluster:
        yield cluster.scheduler_address


def test_address_from_environment(scheduler, monkeypatch):
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", scheduler)
    cfg = make_cfg(kind="address")
    with make_client(cfg) as client:
        assert client.scheduler.address == scheduler
        assert client.submit(_double, 4).result() == 8
        assert dask.compute(dask.delayed(_double)(5))[0] == 10  # the client is the default scheduler


def test_address_in_config_wins_over_environment(scheduler, monkeypatch):
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", "tcp://127.0.0.1:9")  # nothing listens there
    with make_client(make_cfg(kind="address", address=scheduler)) as client:
        assert client.scheduler.address == scheduler


def test_address_missing_is_a_config_error(monkeypatch):
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    with pytest.raises(ConfigError) as info:
        with make_client(make_cfg(kind="address")):
            pass
    assert info.value.where == "cluster.address" and "DASK_SCHEDULER_ADDRESS" in info.value.fix


def test_synchronous_runs_in_process():
    with make_client(make_cfg(kind="synchronous")) as client:
        assert client is None
        assert dask.config.get("scheduler") == "synchronous"
        assert dask.compute(dask.delayed(_double)(3))[0] == 6
    assert dask.config.get("scheduler", None) != "synchronous"


def test_kubernetes_bad_spec_fails_before_any_api_call():
    cfg = make_cfg(kind="kubernetes", kubernetes={"adaptive_min": 9, "adaptive_max": 3})
    with pytest.raises(ConfigError) as info:
        with make_client(cfg):
            pass
    assert info.value.where == "cluster.kubernetes.adaptive_min"


def test_kubernetes_without_api_access_is_a_config_error(monkeypatch, tmp_path):
    """No kubeconfig and not in a pod: a clear ConfigError, not a traceback (nothing is contacted)."""
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    monkeypatch.setenv("HOME", str(tmp_path))
    for var in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"):
        monkeypatch.delenv(var, raising=False)
    cfg = make_cfg(kind="kubernetes", kubernetes={"name": "no-api", "namespace": "eo"})
    with pytest.raises(ConfigError) as info:
        with make_client(cfg):
            pass
    assert info.value.where == "cluster.kind"
    assert "no-api" in info.value.problem and "operator" in info.value.fix
