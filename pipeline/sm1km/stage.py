"""Shared plumbing for stage entry points: config loading for the CLI and the dask client."""

from __future__ import annotations

import contextlib

from .config import RunConfig


def add_config_argument(p, required: bool = True) -> None:
    p.add_argument("--config", "-c", required=required, metavar="RUN_YAML", help="run configuration (YAML)")


def load_config(args_or_path) -> RunConfig:
    if isinstance(args_or_path, RunConfig):
        return args_or_path
    path = getattr(args_or_path, "config", args_or_path)
    return RunConfig.from_yaml(path)


@contextlib.contextmanager
def stage_client(cfg: RunConfig, client=None):
    """Yield a dask ``Client``: the one given, else one made by the cluster factory from the config.

    A permanent object-store failure inside the block (access denied, bucket gone; in this
    process or re-raised from a dask task) becomes a StoreError (``store.permanent_errors``).
    """
    from .store import permanent_errors

    with permanent_errors(cfg.store.root, cfg.store.storage_options()):
        if client is not None:
            yield client
            return
        from .cluster import make_client

        with make_client(cfg) as c:
            yield c
