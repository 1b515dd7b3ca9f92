"""What the verb modules share: the ``--config`` option, loading it, and the run lock around a command.

Light on purpose: ``cli/__init__`` imports every verb module (and so this one) to build its table,
and ``sm1km --version`` / ``--help`` must not pay for pydantic, numpy or the lock machinery — the
config and the lock are imported when a command runs.
"""

from __future__ import annotations

import functools


def add_config_argument(p, required: bool = True) -> None:
    p.add_argument("--config", "-c", required=required, metavar="RUN_YAML", help="run configuration (YAML)")


def load_config(args_or_path):
    """The :class:`~sm1km.config.RunConfig` of parsed arguments (their ``--config``), of a path, or the config itself."""
    from sm1km.config import RunConfig

    if isinstance(args_or_path, RunConfig):
        return args_or_path
    path = getattr(args_or_path, "config", args_or_path)
    return RunConfig.from_yaml(path)


def log_level(args) -> int:
    """The log level the global ``-q`` / ``-v`` options ask for (WARNING / INFO / DEBUG at ``-vv``):
    a verb that sets the ``sm1km`` logger's level itself (demo, bench) uses this, so ``-q`` holds."""
    import logging

    if getattr(args, "quiet", False):
        return logging.WARNING
    return logging.DEBUG if int(getattr(args, "verbose", 0) or 0) > 1 else logging.INFO


def chatty(args) -> bool:
    """Whether a verb prints its human-readable summary (not under ``-q``; results meant for
    programs — JSON, file lists — are printed whatever the level)."""
    return not getattr(args, "quiet", False)


def add_lock_arguments(p) -> None:
    p.add_argument("--force-unlock", action="store_true",
                   help="break the store's run lock first (only when the run that holds it is surely dead)")


def with_lock_arguments(add_arguments):
    """Decorator for a verb's ``add_arguments``: adds ``--force-unlock``."""
    @functools.wraps(add_arguments)
    def wrapper(p):
        add_arguments(p)
        add_lock_arguments(p)
    return wrapper


def locked_cli(stage: str):
    """Decorator for a verb's ``run``: hold the store's run lock while the command runs."""
    def deco(run):
        @functools.wraps(run)
        def wrapper(args):
            from sm1km.storage.lock import run_lock

            cfg = load_config(args)
            with run_lock(cfg, stage, force=bool(getattr(args, "force_unlock", False))):
                return run(args)
        return wrapper
    return deco


def add_dry_run_arguments(p) -> None:
    """``--dry-run`` (+ ``--dry-run-root``, ``--keep-templates``) of ``run`` and ``update``."""
    p.add_argument("--dry-run", action="store_true",
                   help="compute nothing: create every store's template at full size under a scratch root, plan "
                        "every unit, scan the ledgers; print units, requests, wall time and peak memory as JSON "
                        "(the run's own stores are not touched)")
    p.add_argument("--dry-run-root", default=None, metavar="URL",
                   help="scratch root of the dry run's templates (default: <store.root>/_dryrun, removed afterwards)")
    p.add_argument("--keep-templates", action="store_true",
                   help="with --dry-run: leave the templates under the scratch root for inspection")


__all__ = ["add_dry_run_arguments", "add_config_argument", "load_config", "log_level", "chatty", "add_lock_arguments", "with_lock_arguments", "locked_cli"]
