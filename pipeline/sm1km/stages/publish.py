"""Reprocessing: make a complete new run the published version under a stable public prefix.

The new version is written as a complete new run root (``store.root``), checked
(:func:`sm1km.storage.publish.check_published`), and :func:`promote` then writes the STAC catalog and
switches the small pointer ``published.json`` to it in one atomic write. Readers that hold the old
version's URL keep reading it unchanged (guarantee 3 of :mod:`sm1km.storage.publish`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from sm1km.errors import ConfigError, StoreError
from sm1km.runtime.result import StageResult
from sm1km.stages.catalog import catalog as write_catalog
from sm1km.storage import store
from sm1km.storage.publish import POINTER, POINTER_FORMAT, PRODUCT_STORES, check_published

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
def _relative_to(url: str, base: str) -> str:
    u, b = url.rstrip("/"), base.rstrip("/")
    if u == b:
        return "."
    if not u.startswith(b + "/"):
        raise ConfigError("store.root", f"the store {url} is not under the public prefix {base}.",
                          "write each version under the public prefix (e.g. <prefix>/runs/<version>).")
    return u[len(b) + 1:]


def _same_pointer(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
    """Does the published pointer already say what ``new`` says (``updated`` aside)?"""
    if not old:
        return False
    return {k: v for k, v in old.items() if k != "updated"} == {k: v for k, v in new.items() if k != "updated"}


def promote(cfg, public_url: str | None = None, *, products: Iterable[str] = tuple(PRODUCT_STORES), catalog: bool = True,
            storage_options: Mapping[str, Any] | None = None, version: str | None = None) -> StageResult:
    """Make the run ``cfg`` the published version under ``public_url`` (default: its own root, a
    version promoted in place).

    Checks every product store of the run (:func:`check_published`), writes the STAC catalog to
    ``<public_url>/catalog`` (links relative, to the run's stores) and then, last and in one atomic
    write, ``<public_url>/published.json``: ``{"products": {name: {"href": <relative URL>, ...}}}``.
    Stores of earlier versions are left untouched.

    ``version`` names the version in the pointer (default: the config's ``name``).

    Returns the pointer document itself (what readers of ``published.json`` get: every published
    store by its URL relative to ``public_url``, and the catalog). Units in ``.stats`` are the
    product stores published: written when the pointer changes; when it already says the same
    (``updated`` aside) nothing is rewritten and they count as skipped (a second promote is a
    no-op); ``catalog`` holds the catalog's own counters.
    """
    so = dict(storage_options if storage_options is not None else cfg.store.storage_options())
    public_url = public_url or cfg.store.root
    entries: dict[str, Any] = {}
    for name in products:
        url = cfg.store.url(PRODUCT_STORES[name])
        if not store.exists(url, so):
            continue
        summary = check_published(url, so)
        entries[name] = {"href": _relative_to(url, public_url), "time_coverage_start": summary["time_coverage_start"],
                         "time_coverage_end": summary["time_coverage_end"], "last_updated": summary["last_updated"]}
    if not entries:
        raise StoreError(cfg.store.root, "no finished product store to publish.", "run the pipeline first.")
    doc: dict[str, Any] = {"sm1km_published": POINTER_FORMAT, "version": version or cfg.name,
                           "root": _relative_to(cfg.store.root, public_url), "updated": store.now_iso(),
                           "products": entries}
    stats: dict[str, Any] = {"units_total": len(entries), "units_written": len(entries), "units_skipped": 0}
    if catalog:
        out = write_catalog(cfg, out_url=store.join(public_url, "catalog"))
        doc["catalog"] = _relative_to(out["collection"], public_url)
        stats["catalog"] = dict(out.stats)
    pointer = store.join(public_url, POINTER)
    try:
        old = store.read_json(pointer, so)
    except ValueError:  # a torn or foreign pointer: replaced
        old = None
    if _same_pointer(old, doc):
        log.info("%s already publishes %s: nothing to switch", pointer, doc["version"])
        stats.update(units_written=0, units_skipped=len(entries))
        return StageResult(dict(old or doc), stats)
    store.write_json(pointer, doc, so, indent=1)  # the one atomic step that switches readers
    log.info("published %s: %s", public_url, {k: v["href"] for k, v in entries.items()})
    return StageResult(doc, stats)
