"""Publishing stores to readers over HTTP: what a reader sees, and the pointer to the published version.

Readers open a store with ``xarray.open_zarr(url)``: one GET of the root ``zarr.json`` (attributes +
consolidated metadata of every array), then GETs of chunk objects — whole objects, or for sharded
arrays a *suffix* Range request for the shard index followed by Range requests for inner chunks.
Readers never list and never read an array's own ``zarr.json``. The guarantees below follow from
that (details and tests: docs/reading.md, tests/test_publish.py).

1. **Publishing is one write.** :func:`sm1km.storage.store.finalize` writes the attributes and the
   consolidated metadata in one atomic write of the root ``zarr.json`` — the last write of a stage.
   :func:`check_published` checks a store from a reader's side (consolidated metadata complete and
   current, CF packing attributes present).
2. **Appending days** (a store grows in time) without disturbing readers: :mod:`sm1km.storage.append`
   (new days stay invisible until ``finalize``; the shard that holds published and new days is
   rewritten prefix-preserving).
3. **Reprocessing** (published values change): never in place — that would show readers a mix of
   old and new shards. The new version is written as a complete new run root (``store.root``),
   checked, and then :func:`sm1km.stages.publish.promote` switches the small pointer ``published.json`` (and the STAC
   catalog) under a stable public prefix to it, in one atomic write. The old version stays
   unchanged for readers that hold its URL; remove it after a grace period. :func:`resolve`
   follows the pointer (also over http(s)).

For public reading from S3 without credentials, :func:`public_read_policy` is the bucket policy
(``s3:GetObject`` only: no listing is needed or granted).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from sm1km.errors import StoreError
from sm1km.storage import store

log = logging.getLogger(__name__)

POINTER = "published.json"
POINTER_FORMAT = 1
PRODUCT_STORES = {"fused": "fused.zarr", "master": "master.zarr", "monthly": "monthly.zarr"}


# --------------------------------------------------------------------------------------------
# what a reader sees
# --------------------------------------------------------------------------------------------
def read_root_metadata(url: str, storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The root ``zarr.json`` as a dict (what an HTTP reader fetches first)."""
    try:
        root: dict[str, Any] | None = store.read_json(store.join(url, "zarr.json"), storage_options)
    except ValueError as exc:
        raise StoreError(url, f"the root zarr.json is not valid JSON ({exc}).",
                         "re-run the stage that writes the store.") from None
    if root is None:
        raise StoreError(url, "no zarr.json: not a Zarr v3 store.", "check the URL.")
    return root


def check_published(url: str, storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Check that a store is readable over HTTP without listing; returns a short summary.

    Requires: consolidated metadata in the root ``zarr.json`` that lists every array of the store
    with the same shape as the array's own metadata (i.e. finalize ran after the last write),
    and CF packing attributes on every int16 variable with a ``scale_factor``.
    """
    root = read_root_metadata(url, storage_options)
    cons = (root.get("consolidated_metadata") or {}).get("metadata")
    if not cons:
        raise StoreError(url, "the store has no consolidated metadata (HTTP readers cannot open it without "
                              "listing).", "finish the stage that writes it (its last step is store.finalize).")
    g = store.open_group(url, storage_options, mode="r", use_consolidated=False)
    actual: dict[str, dict[str, Any]] = {name: node.metadata.to_dict() for name, node in g.members(max_depth=None)}
    missing = sorted(set(actual) - set(cons))
    stale = sorted(n for n in actual if n in cons and
                   list(actual[n].get("shape") or []) != list(cons[n].get("shape") or []))
    if missing or stale:
        raise StoreError(url, f"consolidated metadata is out of date (missing: {missing}, other shape: {stale}).",
                         "finish the update: run store.finalize on the store (the stage's last step).")
    for name, meta in cons.items():
        attrs = meta.get("attributes", {})
        if meta.get("data_type") == "int16" and "scale_factor" in attrs:
            for key in ("_FillValue", "units", "add_offset"):
                if key not in attrs:
                    raise StoreError(url, f"variable {name!r} lacks the CF attribute {key!r}.",
                                     "write the store from the master/monthly templates (sm1km.storage.master).")
    attrs = root.get("attributes", {})
    shapes = {n: m.get("shape") for n, m in cons.items() if m.get("node_type") == "array"}
    return {"url": url, "arrays": shapes, "time_coverage_start": attrs.get("time_coverage_start"),
            "time_coverage_end": attrs.get("time_coverage_end"), "last_updated": attrs.get("last_updated")}


def public_read_policy(bucket: str, prefix: str = "") -> dict[str, Any]:
    """S3 bucket policy letting anyone GET objects under ``prefix`` (no listing, no writes)."""
    resource = f"arn:aws:s3:::{bucket}/{prefix.strip('/') + '/' if prefix.strip('/') else ''}*"
    return {"Version": "2012-10-17",
            "Statement": [{"Sid": "sm1kmPublicRead", "Effect": "Allow", "Principal": "*",
                           "Action": "s3:GetObject", "Resource": resource}]}


def resolve(public_url: str, product: str = "master", storage_options: Mapping[str, Any] | None = None) -> str:
    """URL of the published store of ``product`` (reads ``published.json``; works over http(s) too)."""
    doc = store.read_json(store.join(public_url, POINTER), storage_options)
    if doc is None:
        raise StoreError(public_url, "nothing published here (no published.json).", "run promote first.")
    try:
        return store.join(public_url, doc["products"][product]["href"])
    except KeyError:
        raise StoreError(public_url, f"product {product!r} is not published.",
                         f"published: {sorted(doc.get('products', {}))}.") from None
