"""Cluster factory: ``local`` (LocalCluster from config), ``address`` (existing scheduler,
``$DASK_SCHEDULER_ADDRESS`` as set in a DaskJob runner pod), ``synchronous`` (no cluster, for
debugging) and ``kubernetes`` (dask-kubernetes operator ``KubeCluster``).

TLS (``cluster.security.tls``): :func:`cluster_security` turns the config into a dask ``Security``
(mutual TLS, ``require_encryption``), used by the client of every kind. The dask operator always
writes ``tcp://`` into ``$DASK_SCHEDULER_ADDRESS``; with TLS on, such an address is dialled as
``tls://`` (a plain-TCP connection to a TLS scheduler would only time out). A ``local`` cluster with
TLS and no certificate files uses throw-away in-memory certificates (``Security.temporary()``).
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any

from sm1km.config import RunConfig
from sm1km.errors import ConfigError

log = logging.getLogger(__name__)

#: Security field -> (config key, dask config key of the fallback)
_TLS_FILES = {"tls_ca_file": ("ca_file", "distributed.comm.tls.ca-file"),
              "tls_client_cert": ("cert_file", "distributed.comm.tls.client.cert"),
              "tls_client_key": ("key_file", "distributed.comm.tls.client.key")}


def cluster_security(cfg: RunConfig, *, allow_temporary: bool = False) -> Any:
    """The dask ``Security`` of the client for ``cfg.cluster.security`` (None when TLS is off).

    Each path comes from the config or, when unset, from dask's config (the environment variables
    the Helm chart sets); a missing or unreadable file is a ConfigError naming the key. With
    ``allow_temporary`` (a local cluster) and no files at all, throw-away certificates are made.
    """
    import dask
    from distributed.security import Security

    s = cfg.cluster.security
    if not s.tls:
        return None
    paths = {field: getattr(s, key) or dask.config.get(dask_key, None)
             for field, (key, dask_key) in _TLS_FILES.items()}
    if allow_temporary and not any(paths.values()):
        return Security.temporary()
    for field, path in paths.items():
        key, dask_key = _TLS_FILES[field]
        if not path:
            raise ConfigError(f"cluster.security.{key}", "cluster.security.tls is on but no file is given.",
                              f"set cluster.security.{key} or the dask config {dask_key} "
                              f"(DASK_{dask_key.upper().replace('.', '__').replace('-', '_')}) to a PEM file "
                              "of the mounted certificate Secret (docs/security.md).")
        if not os.access(path, os.R_OK) or not Path(path).is_file():
            raise ConfigError(f"cluster.security.{key}", f"'{path}' is not a readable file.",
                              "mount the certificate Secret and point the path at it (docs/security.md).")
    return Security(require_encryption=True, **paths)


def tls_address(address: str, security: Any) -> str:
    """``address`` as dialled: ``tcp://`` (the operator's default) or no scheme becomes ``tls://``
    when ``security`` is set. With TLS off a ``tls://`` address works only through dask's own TLS
    config (``distributed.comm.tls.*``); without that it is refused (it could only time out)."""
    import dask

    scheme, sep, rest = address.partition("://")
    if not sep:
        scheme, rest = "tcp", address
    if security is not None:
        if scheme not in ("tcp", "tls"):
            raise ConfigError("cluster.address", f"'{address}' cannot be reached over TLS.",
                              "use a tls:// (or tcp://) scheduler address with cluster.security.tls.")
        return f"tls://{rest}"
    if scheme == "tls" and not dask.config.get("distributed.comm.tls.ca-file", None):
        raise ConfigError("cluster.security.tls", f"the scheduler address '{address}' is tls:// but TLS is off.",
                          "set cluster.security.tls: true (and its certificate files).")
    return address


#: dashboard links already logged by this process (every stage makes or is given a client)
_DASHBOARDS_LOGGED: set[str] = set()


def log_dashboard(client, what: str = "dask client") -> None:
    """Log ``what (dashboard: <link>)`` at INFO the first time this process sees the link, at DEBUG after."""
    link = getattr(client, "dashboard_link", None)
    if not link:
        return
    first = link not in _DASHBOARDS_LOGGED
    _DASHBOARDS_LOGGED.add(link)
    log.log(logging.INFO if first else logging.DEBUG, "%s (dashboard: %s)", what, link)


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
        security = cluster_security(cfg)
        address = tls_address(address, security)
        with Client(address, timeout="60s", security=security) as client:
            log_dashboard(client, f"connected to scheduler {address}")
            yield client
        return
    if c.kind == "kubernetes":
        from sm1km.runtime.kube import kube_cluster  # provided by the deployment layer

        with kube_cluster(cfg) as cluster, Client(cluster) as client:
            log_dashboard(client, f"KubeCluster {cluster.name}")
            yield client
        return
    security = cluster_security(cfg, allow_temporary=True)
    tls = {"protocol": "tls://", "security": security} if security is not None else {}
    with LocalCluster(n_workers=c.n_workers, threads_per_worker=c.threads_per_worker,
                      memory_limit=c.memory_limit, processes=True, dashboard_address=":0",
                      host="127.0.0.1", **tls) as cluster, Client(cluster, security=security) as client:
        log_dashboard(client, f"local cluster with {c.n_workers} workers")
        yield client
