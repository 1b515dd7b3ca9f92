"""Per-process caches of a worker: the model it predicts with, the stores it has opened.

A task carries only URLs and the model's sha256 (a few hundred bytes); what is expensive to set
up lives here, once per worker process:

* :func:`worker_model`: the verified ``LoadedModel`` for (url, sha256, threads, device), parsed at
  most once per process, however many tasks the process runs. :func:`model_loads` says how many times this process did it (tests and the benchmark
  ask every worker through ``client.run``). A model file that changed during the run (another
  sha256) is refused with a ModelError.
* :func:`opened_dataset` / :func:`opened_group`: stores opened by this process for one run
  (``run_token``): a task reuses what its worker parsed for an earlier task (consolidated
  metadata, coordinates: ≈ 15 ms of a ≈ 0.7 s downscale task). Bounded, and keyed by the run, so
  a later run (which may follow a re-ingest) opens them afresh; an empty token never caches.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

from sm1km.errors import ModelError
from sm1km.storage import store

# --------------------------------------------------------------------------------------------
# the model, once per worker process
# --------------------------------------------------------------------------------------------
_MODEL_LOCK = threading.Lock()
_MODELS: dict[tuple, Any] = {}
_MODEL_LOADS = 0


def model_loads() -> int:
    """How many times this process loaded (parsed and verified) a model for downscaling."""
    return _MODEL_LOADS


def worker_model(url: str, sha256: str, storage_options: Mapping[str, Any], n_threads: int, device: str):
    """The LoadedModel for (url, sha256), loaded at most once per process."""
    global _MODEL_LOADS
    key = (url, sha256, int(n_threads), device)
    with _MODEL_LOCK:
        m = _MODELS.get(key)
        if m is None:
            from sm1km.storage.model import load_model

            m = load_model(url, storage_options, n_threads=n_threads, device=device)
            if m.sha256 != sha256:
                raise ModelError(url, f"the model changed during the run (sha256 {m.sha256[:12]}… instead of "
                                 f"{sha256[:12]}…).", "re-run `sm1km downscale` (it resumes) once training is done.")
            _MODELS[key] = m
            _MODEL_LOADS += 1
        return m


# --------------------------------------------------------------------------------------------
# stores opened for a run
# --------------------------------------------------------------------------------------------
_OPENED: dict[tuple[str, str, str], Any] = {}
_OPENED_MAX = 8
_OPENED_LOCK = threading.Lock()


def _cached(kind: str, url: str, run_token: str, open_it: Callable[[], Any]):
    if not run_token:
        return open_it()
    key = (run_token, kind, url)
    with _OPENED_LOCK:
        hit = _OPENED.get(key)
    if hit is not None:
        return hit
    obj = open_it()
    with _OPENED_LOCK:
        if len(_OPENED) >= _OPENED_MAX:
            _OPENED.pop(next(iter(_OPENED)))  # oldest first (dicts keep insertion order)
        return _OPENED.setdefault(key, obj)


def opened_dataset(url: str, storage_options: Mapping[str, Any], run_token: str):
    """``store.open_dataset(url)``, cached per process for ``run_token`` ("" = not cached)."""
    return _cached("dataset", url, run_token, lambda: store.open_dataset(url, storage_options))


def opened_group(url: str, storage_options: Mapping[str, Any], run_token: str):
    """A writable ``store.open_group(url, mode="r+")``, cached per process for ``run_token``."""
    return _cached("group", url, run_token, lambda: store.open_group(url, storage_options, mode="r+"))


__all__ = ["model_loads", "worker_model", "opened_dataset", "opened_group"]
