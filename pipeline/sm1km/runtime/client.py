"""The dask client of a stage: the one the caller gave, else one made from the run config."""

from __future__ import annotations

import contextlib

from sm1km.config import RunConfig


@contextlib.contextmanager
def stage_client(cfg: RunConfig, client=None):
    """Yield a dask ``Client``: the one given, else one made by the cluster factory from the config.

    The dask dashboard link is logged once per process (``cluster.log_dashboard``).
    A permanent object-store failure inside the block (access denied, bucket gone; in this
    process or re-raised from a dask task) becomes a StoreError (``store.permanent_errors``).
    """
    from sm1km.storage.store import permanent_errors

    with permanent_errors(cfg.store.root, cfg.store.storage_options()):
        if client is not None:
            from sm1km.runtime.cluster import log_dashboard

            log_dashboard(client)  # once per process: a Pipeline hands the same client to every stage
            yield client
            return
        from sm1km.runtime.cluster import make_client

        with make_client(cfg) as c:
            yield c
