"""The whole pipeline as one resumable object — the Python API for notebooks and batch jobs.

>>> from sm1km import Pipeline
>>> p = Pipeline.from_yaml("run.yaml")
>>> outputs = p.run(client)            # every stage in order; finished work is skipped
>>> p.fuse(client)                     # or one stage at a time

``sm1km run --config run.yaml`` is the same from the command line (the Kubernetes DaskJob runner
calls it with ``DASK_SCHEDULER_ADDRESS`` set and ``cluster.kind: address``).
"""

from __future__ import annotations

import importlib
import logging
import time
from typing import Any, Callable

from sm1km.config import RunConfig
from sm1km.runtime.client import locked_cli, with_lock_arguments
from sm1km.storage.lock import run_lock
from sm1km.runtime.client import add_config_argument, load_config, stage_client

log = logging.getLogger(__name__)

#: stage name -> (module, function). Order is execution order.
STAGES: dict[str, tuple[str, str]] = {
    "ingest": ("sm1km.stages.ingest", "ingest"),
    "fuse": ("sm1km.stages.fuse", "fuse"),
    "train": ("sm1km.stages.train", "train"),
    "downscale": ("sm1km.stages.downscale", "downscale"),
    "aggregate": ("sm1km.stages.aggregate", "aggregate"),
    "export": ("sm1km.stages.pipeline", "_export_default"),
    "validate": ("sm1km.validation.validate", "validate"),
    "catalog": ("sm1km.stages.catalog", "catalog"),
}
DEFAULT_STAGES = ("ingest", "fuse", "train", "downscale", "aggregate", "validate", "catalog")


def stage_function(name: str) -> Callable[..., Any] | None:
    """The callable of a stage, or None if that stage is not part of this installation."""
    modname, func = STAGES[name]
    try:
        mod = importlib.import_module(modname)
    except ModuleNotFoundError as exc:
        if exc.name == modname:
            return None
        raise
    return getattr(mod, func, None)


def _export_default(cfg: RunConfig, client=None):
    """Daily GeoTIFF (COG) and HDF5 deliverables of the whole run into ``<root>/exports/``:
    ``{"geotiff": [urls], "hdf5": [urls]}``, stats summed over both exports."""
    from sm1km.runtime.result import StageResult
    from sm1km.stages.export import export

    out = cfg.store.url("exports")
    files, stats = {}, {}
    for fmt in ("geotiff", "hdf5"):
        res = export(cfg, client=client, fmt=fmt, product="daily", out=store_join(out, fmt))
        files[fmt] = res["files"]
        for k, v in res.stats.items():
            stats[k] = stats.get(k, 0) + v
    return StageResult(files, stats)


def store_join(*parts):
    from sm1km.storage.store import join

    return join(*parts)


class Pipeline:
    """All stages of one run config; each method returns what the stage wrote (URLs)."""

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.timings: dict[str, float] = {}

    @classmethod
    def from_yaml(cls, path) -> "Pipeline":
        return cls(RunConfig.from_yaml(path))

    def available(self) -> list[str]:
        return [s for s in STAGES if stage_function(s) is not None]

    def stage(self, name: str, client=None, **options):
        fn = stage_function(name)
        if fn is None:
            raise NotImplementedError(f"stage {name!r} is not available in this installation")
        t0 = time.perf_counter()
        log.info("stage %s: start", name)
        with run_lock(self.cfg, name):  # one writer per store root (re-entrant inside run())
            out = fn(self.cfg, client=client, **options)
        self.timings[name] = time.perf_counter() - t0
        log.info("stage %s: done in %.1f s", name, self.timings[name])
        return out

    def run(self, client=None, stages=DEFAULT_STAGES, skip_missing: bool = False) -> dict[str, Any]:
        """Run ``stages`` in order on one dask client (made from the config if not given)."""
        outputs: dict[str, Any] = {}
        with run_lock(self.cfg, "run"), stage_client(self.cfg, client) as c:
            for name in stages:
                if stage_function(name) is None:
                    if skip_missing:
                        log.warning("stage %s is not available yet: skipped", name)
                        continue
                    raise NotImplementedError(f"stage {name!r} is not available in this installation")
                outputs[name] = self.stage(name, client=c)
        return outputs

    def __getattr__(self, name):
        if name in STAGES:
            return lambda client=None, **kw: self.stage(name, client=client, **kw)
        raise AttributeError(name)


# ---------------------------------------------------------------------------------------------- CLI
@with_lock_arguments
def add_arguments(p) -> None:
    add_config_argument(p)
    p.add_argument("--stages", default=",".join(DEFAULT_STAGES),
                   help=f"comma-separated stages to run, in order (default: {','.join(DEFAULT_STAGES)}; "
                        f"available: {','.join(STAGES)})")


@locked_cli("run")
def run_cli(args) -> int:
    import json

    cfg = load_config(args)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        from sm1km.errors import ConfigError

        raise ConfigError("--stages", f"unknown stage(s) {unknown}.", f"choose from {', '.join(STAGES)}.")
    outputs = Pipeline(cfg).run(stages=stages)
    print(json.dumps(outputs, indent=2, default=str))
    return 0
