"""The per-store *ingest index* and the content digests it records.

Every input store has one index object, ``<root>/_ledger/<store name>/ingest-index.json``: for
every stored day the file it came from and a digest of its decoded content, the sha256 of every
input file, the days each file holds (ERA5 monthly files) and the static fields; and what the
store holds, for the dependency tracking of later stages (:mod:`sm1km.storage.deps`):
``stored_days`` (``{"YYYY-MM-DD": digest}`` of each day's stored, decoded values — for the
predictors the gap-filled ones) and ``stored_static``. It is the
ingest's ledger: a file whose sha256 is in the index is not decoded again, and a day whose
content digest differs from the recorded one is refused unless ``--overwrite``. The index is
written **last**, after the store's consolidated metadata: a store without its index is the
remains of an interrupted first ingest and is created again.

The digest of a day is a sum (mod 2**128) of sha256 digests of its store-chunk tiles, so it does
not depend on how the read pass cut the region into bands (tasks add their parts).
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from sm1km.errors import StoreError
from sm1km.storage import store

INDEX_VERSION = 1
DIGEST_MOD = 1 << 128


def digest(key: str, arr: np.ndarray) -> int:
    """Content digest of one array piece (NaN-canonical), as an int to be summed mod 2**128."""
    a = np.ascontiguousarray(arr)
    if a.dtype.kind == "f":
        a = np.where(np.isnan(a), np.nan, a).astype(a.dtype)
    h = hashlib.sha256(f"{key}|{a.dtype.str}|{a.shape}|".encode() + a.tobytes()).digest()
    return int.from_bytes(h[:16], "big")


def chunk_digests(key: str, arr2d: np.ndarray, row0: int, col0: int, cy: int, cx: int) -> int:
    """Sum of digests of the store-chunk tiles of a 2-D band (independent of how bands are cut)."""
    total = 0
    ny, nx = arr2d.shape
    for r in range(0, ny, cy):
        for c in range(0, nx, cx):
            total += digest(f"{key}@{row0 + r},{col0 + c}", arr2d[r:r + cy, c:c + cx])
    return total % DIGEST_MOD


def hex_digest(d: int) -> str:
    """The digest as recorded in the index (32 hex digits)."""
    return f"{d % DIGEST_MOD:032x}"


class IngestIndex:
    """The index object of one store: ``<root>/_ledger/<store_name>/ingest-index.json``."""

    def __init__(self, root: str, store_name: str, storage_options: dict | None = None):
        self.store_name = store_name
        self.url = store.join(root, "_ledger", store_name, "ingest-index.json")
        self.storage_options = dict(storage_options or {})

    def empty(self) -> dict[str, Any]:
        return {"version": INDEX_VERSION, "store": self.store_name, "files": {}, "file_days": {}, "days": {},
                "static": {}}

    def read(self) -> dict[str, Any] | None:
        """The stored index, or None if there is none."""
        try:
            return store.read_json(self.url, self.storage_options)
        except (ValueError, OSError) as exc:
            raise StoreError(self.url, f"the ingest index is unreadable ({exc}).",
                             "remove it and re-run `sm1km ingest --overwrite`.") from None

    def write(self, index: dict[str, Any]) -> None:
        """Replace the index as a whole (sorted keys, compact: byte-identical for equal content)."""
        store.write_json(self.url, index, self.storage_options, separators=(",", ":"))


__all__ = ["INDEX_VERSION", "DIGEST_MOD", "IngestIndex", "digest", "chunk_digests", "hex_digest"]
