"""Cluster factory: ``local`` (LocalCluster from config), ``address`` (existing scheduler,
``$DASK_SCHEDULER_ADDRESS`` as set in a DaskJob runner pod), ``synchronous`` (no cluster, for
debugging) and ``kubernetes`` (dask-kubernetes operator ``KubeCluster``)."""

from __future__ import annotations

import contextlib
import logging
import os

from sm1km.config import RunConfig
from sm1km.errors import ConfigError

log = logging.getLogger(__name__)


@contextlib.contextmanager
def make_client(cfg: RunConfig):
    """Context manager yielding a connected ``distributed.Client`` (or None for synchronous)."""
    from distributed import Client, LocalCluster

    c = cfg.cluster
    if c.kind == "synchronous":
        import dask

        with dask.config.set(scheduler="synchronous"):
            yield None
        return
    if c.kind == "address":
        address = c.address or os.environ.get("DASK_SCHEDULER_ADDRESS")
        if not address:
            raise ConfigError("cluster.address", "cluster.kind is 'address' but no address is set.",
                              "set cluster.address or the DASK_SCHEDULER_ADDRESS environment variable.")
        with Client(address, timeout="60s") as client:
            log.info("connected to scheduler %s (dashboard: %s)", address, client.dashboard_link)
            yield client
        return
    if c.kind == "kubernetes":
        from sm1km.runtime.kube import kube_cluster  # provided by the deployment layer

        with kube_cluster(cfg) as cluster, Client(cluster) as client:
            log.info("KubeCluster %s (dashboard: %s)", cluster.name, client.dashboard_link)
            yield client
        return
    with LocalCluster(n_workers=c.n_workers, threads_per_worker=c.threads_per_worker,
                      memory_limit=c.memory_limit, processes=True, dashboard_address=":0",
                      host="127.0.0.1") as cluster, Client(cluster) as client:
        log.info("local cluster with %d workers (dashboard: %s)", c.n_workers, client.dashboard_link)
        yield client
