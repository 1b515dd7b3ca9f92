"""Shared plumbing for stage entry points: config loading for the CLI and the dask client."""

from __future__ import annotations

import contextlib
import functools

from sm1km.config import RunConfig
from sm1km.storage.lock import run_lock


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
    from sm1km.storage.store import permanent_errors

    with permanent_errors(cfg.store.root, cfg.store.storage_options()):
        if client is not None:
            yield client
            return
        from sm1km.runtime.cluster import make_client

        with make_client(cfg) as c:
            yield c


def add_lock_arguments(p) -> None:
    p.add_argument("--force-unlock", action="store_true",
                   help="break the store's run lock first (only when the run that holds it is surely dead)")


def with_lock_arguments(add_arguments):
    """Decorator for a stage's ``add_arguments``: adds ``--force-unlock``."""
    @functools.wraps(add_arguments)
    def wrapper(p):
        add_arguments(p)
        add_lock_arguments(p)
    return wrapper


def locked_cli(stage: str):
    """Decorator for a stage's ``run_cli``: hold the store's run lock while the command runs."""
    def deco(run_cli):
        @functools.wraps(run_cli)
        def wrapper(args):
            cfg = load_config(args)
            with run_lock(cfg, stage, force=bool(getattr(args, "force_unlock", False))):
                return run_cli(args)
        return wrapper
    return deco
