"""Dependency tracking between stores: what each time block of a store was computed from.

Every store that grows in time is cut into *time blocks* (the master's ``grid.time_block_days``,
aligned on ``period.start``). For each finished block a stage records a **deps digest**: the
sha256 of the canonical JSON of everything the block was computed from (upstream per-day or
per-block digests, parameter digests, the model's sha256). The record is one small object per
store, ``<root>/_ledger/<store name>/blocks.json`` (``{block key: deps digest}``), written by the
driver (under the run lock) after every unit of the block is written and marked. Unit markers in
the :class:`~sm1km.storage.store.Ledger` carry the same digest under ``"deps"``.

A stage run then needs no per-unit reads to know what to do:

* a block whose recorded digest equals the current one is up to date (skipped as a whole);
* a block without a record, or with another digest (an upstream day was revised), is redone:
  exactly the units whose marker is missing or carries another ``"deps"``.

Downstream stages build their deps from the upstream store's ``blocks.json`` (or, for the input
stores, from the ingest index's per-day digests, :func:`input_day_digests`), so a revised input
day propagates block by block: cci/era5 day -> fused block -> master block -> month -> exports.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from sm1km.storage import store

BLOCKS = "blocks.json"
BLOCKS_VERSION = 1


def digest_of(obj: Any) -> str:
    """sha256 (64 hex digits) of ``obj`` as canonical JSON (sorted keys, compact, no NaN)."""
    payload = json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


class BlockDigests:
    """``<root>/_ledger/<store_name>/blocks.json``: deps digest of every finished time block."""

    def __init__(self, root: str, store_name: str, storage_options: Mapping[str, Any] | None = None):
        self.store_name = store_name
        self.url = store.join(root, "_ledger", store_name, BLOCKS)
        self.storage_options = dict(storage_options or {})

    def read(self) -> dict[str, str]:
        """{block key: deps digest} ({} when nothing was recorded yet)."""
        doc = store.read_json(self.url, self.storage_options)
        if not doc:
            return {}
        blocks: dict[str, str] = dict(doc.get("blocks", {}))
        return blocks

    def record(self, updates: Mapping[str, str]) -> None:
        """Record finished blocks (read-modify-write by the driver, one atomic write)."""
        if not updates:
            return
        blocks = self.read()
        blocks.update(updates)
        store.write_json(self.url, {"version": BLOCKS_VERSION, "store": self.store_name,
                                    "blocks": dict(sorted(blocks.items()))},
                         self.storage_options, separators=(",", ":"))

    def stale(self, current: Mapping[str, str]) -> list[str]:
        """Keys of ``current`` ({block key: deps digest}) whose record is missing or differs."""
        have = self.read()
        return [k for k, d in current.items() if have.get(k) != d]

    def clear(self) -> None:
        store.remove(self.url, self.storage_options)


def unit_fresh(info: Mapping[str, Any] | None, deps: str) -> bool:
    """Is a unit marker (``Ledger.info``) current for ``deps``?"""
    return info is not None and info.get("deps") == deps


def units_to_do(ledger: store.Ledger, keys: Iterable[str], deps: str) -> list[str]:
    """Of ``keys`` (units of one stale block), those whose marker is missing or not for ``deps``."""
    present = ledger.keys()
    return [k for k in keys if k not in present or not unit_fresh(ledger.info(k), deps)]


def _ingest_index(root: str, store_name: str, storage_options: Mapping[str, Any] | None) -> dict[str, Any]:
    idx: dict[str, Any] | None = store.read_json(store.join(root, "_ledger", store_name, "ingest-index.json"),
                                                 storage_options)
    return idx or {}


def input_day_digests(root: str, store_name: str, storage_options: Mapping[str, Any] | None = None
                      ) -> dict[str, str]:
    """{ISO day: digest} of what an input store holds per day (the stored, decoded values of every
    time-dependent variable of that day), from its ingest index
    (``<root>/_ledger/<store_name>/ingest-index.json``, key ``"stored_days"``); {} without one."""
    days: dict[str, str] = dict(_ingest_index(root, store_name, storage_options).get("stored_days", {}))
    return days


def input_static_digest(root: str, store_name: str, storage_options: Mapping[str, Any] | None = None) -> str:
    """Digest of an input store's variables without a time axis (key ``"stored_static"`` of its
    ingest index; "" without one)."""
    return str(_ingest_index(root, store_name, storage_options).get("stored_static", ""))


__all__ = ["BLOCKS", "BlockDigests", "digest_of", "unit_fresh", "units_to_do", "input_day_digests",
           "input_static_digest"]
