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


# -- TLS ([14]; the chart's and the deployment's TLS are tested in test_kube_spec/test_topology/test_helm) --

@pytest.mark.slow
def test_local_cluster_with_tls_uses_temporary_certificates():
    cfg = make_cfg(kind="local", n_workers=1, threads_per_worker=1, memory_limit="1GiB", security={"tls": True})
    with make_client(cfg) as client:
        assert client.scheduler.address.startswith("tls://127.0.0.1:")
        assert all(a.startswith("tls://") for a in client.scheduler_info()["workers"])
        assert client.submit(_double, 2).result() == 4


def test_tls_with_a_missing_file_is_a_config_error(tmp_path, monkeypatch):
    monkeypatch.delenv("DASK_DISTRIBUTED__COMM__TLS__CA_FILE", raising=False)
    cfg = make_cfg(kind="address", address="tcp://127.0.0.1:9", security={"tls": True})
    with pytest.raises(ConfigError) as info:  # no path in the config nor in dask's config
        with make_client(cfg):
            pass
    assert info.value.where == "cluster.security.ca_file" and "DASK_DISTRIBUTED__COMM__TLS__CA_FILE" in info.value.fix
    cfg = make_cfg(kind="address", address="tcp://127.0.0.1:9", security={
        "tls": True, "ca_file": str(tmp_path / "ca.crt"), "cert_file": str(tmp_path / "tls.crt"),
        "key_file": str(tmp_path / "tls.key")})
    with pytest.raises(ConfigError) as info:
        with make_client(cfg):
            pass
    assert info.value.where == "cluster.security.ca_file" and "not a readable file" in info.value.problem


def test_tls_address_scheme():
    from sm1km.runtime.cluster import tls_address

    sec = object()
    assert tls_address("tcp://sched:8786", sec) == "tls://sched:8786"  # the operator's tcp:// upgraded
    assert tls_address("sched:8786", sec) == "tls://sched:8786"
    assert tls_address("tls://sched:8786", sec) == "tls://sched:8786"
    assert tls_address("tcp://sched:8786", None) == "tcp://sched:8786"
    with pytest.raises(ConfigError):
        tls_address("ucx://sched:8786", sec)
    with dask.config.set({"distributed.comm.tls.ca-file": None}):
        with pytest.raises(ConfigError) as info:  # tls:// without any TLS config could only time out
            tls_address("tls://sched:8786", None)
    assert info.value.where == "cluster.security.tls"
    with dask.config.set({"distributed.comm.tls.ca-file": "/etc/ca.crt"}):  # dask's own TLS config
        assert tls_address("tls://sched:8786", None) == "tls://sched:8786"
