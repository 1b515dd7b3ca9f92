"""Object trees of a store root: snapshot every object's bytes, compare two snapshots, put a
snapshot back, and tell whether an object was rewritten — on a local folder and on S3 alike.

The stage contract (``sm1km.testing.contract``) and the fault tests compare whole roots with
these: *every* object under ``store.root`` (chunks, shards, ``zarr.json`` with its attributes and
consolidated metadata, ledger markers, ingest indexes, model files, reports, exports), byte for
byte. What a comparison leaves out is named here, once (:data:`NOT_STORES`), with the reason.

A tree is a plain ``{key: bytes}`` (key relative to the root, ``/``-separated): the tiny worlds of
the tests hold a few hundred objects and a few MB, so it fits in memory and can be put back into
another root (or the same one) to start a test from a known state.
"""

from __future__ import annotations

import os
import posixpath
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from sm1km.storage import store

#: Top-level folders under ``store.root`` that are not stores, left out of comparisons after a kill:
#: ``_locks/`` holds the run lock (a SIGKILLed run leaves its lock behind; the next run takes it
#: over, see ``storage/lock.py``) and ``_staging/`` is the scratch of an ingest (a killed ingest
#: leaves its own ``_staging/ingest-<token>/``; the next run stages under a new token).
NOT_STORES = ("_locks", "_staging")

Tree = dict[str, bytes]


def _fs(url: str, storage_options: Mapping[str, Any] | None):
    fs, path = store.filesystem(url, storage_options)
    if hasattr(fs, "invalidate_cache"):
        fs.invalidate_cache()
    return fs, path.rstrip("/")


def _rel(path: str, base: str) -> str:
    return path[len(base) + 1:] if path.startswith(base + "/") else posixpath.relpath(path, base)


def _keep(key: str, exclude: Iterable[str]) -> bool:
    return not any(key == e or key.startswith(e.rstrip("/") + "/") for e in exclude)


def snapshot(url: str, storage_options: Mapping[str, Any] | None = None, *,
             exclude: Iterable[str] = ()) -> Tree:
    """Every object under ``url``: ``{relative key: bytes}`` (``{}`` when nothing is there)."""
    exclude = tuple(exclude)
    fs, base = _fs(url, storage_options)
    if not fs.exists(base):
        return {}
    keys = [p for p in sorted(fs.find(base)) if _keep(_rel(p, base), exclude)]
    if not keys:
        return {}
    data = fs.cat(keys) if store.is_remote(url) else {p: fs.cat_file(p) for p in keys}
    return {_rel(p, base): data[p] for p in keys}


def stamps(url: str, storage_options: Mapping[str, Any] | None = None, *,
           exclude: Iterable[str] = ()) -> dict[str, Any]:
    """A write stamp per object: ``(inode, mtime_ns)`` locally, ``LastModified`` on S3 (whole
    seconds: call :func:`next_stamp_tick` before the writes to compare with)."""
    exclude = tuple(exclude)
    fs, base = _fs(url, storage_options)
    if not fs.exists(base):
        return {}
    out: dict[str, Any] = {}
    if store.is_remote(url):
        for p, info in fs.find(base, detail=True).items():
            key = _rel(p, base)
            if _keep(key, exclude):
                out[key] = (info.get("LastModified"), info.get("ETag"))
        return out
    for dirpath, _, names in os.walk(base):
        for n in names:
            p = os.path.join(dirpath, n)
            key = _rel(p.replace(os.sep, "/"), base)
            if _keep(key, exclude):
                st = os.stat(p)
                out[key] = (st.st_ino, st.st_mtime_ns)
    return out


def next_stamp_tick(url: str) -> None:
    """Wait until a write now gets a later stamp than every write so far: S3's ``LastModified``
    has whole seconds (moto too), so sleep into the next second; local mtimes are in ns."""
    if store.is_remote(url):
        time.sleep(1.0 - (time.time() % 1.0) + 0.05)


def rewritten(before: Mapping[str, Any], after: Mapping[str, Any], keys: Iterable[str]) -> list[str]:
    """Of ``keys`` (present in ``before``), those written again since (stamp changed or gone)."""
    return sorted(k for k in keys if k in before and after.get(k) != before[k])


def diff(a: Mapping[str, bytes], b: Mapping[str, bytes],
         normalize: Callable[[str, bytes], bytes] | None = None) -> list[str]:
    """Human-readable differences between two trees (empty list: identical)."""
    out = [f"only in first: {k}" for k in sorted(set(a) - set(b))]
    out += [f"only in second: {k}" for k in sorted(set(b) - set(a))]
    for k in sorted(set(a) & set(b)):
        x, y = a[k], b[k]
        if normalize is not None:
            x, y = normalize(k, x), normalize(k, y)
        if x != y:
            out.append(f"differs: {k}")
    return out


def assert_same(a: Mapping[str, bytes], b: Mapping[str, bytes], what: str = "trees",
                normalize: Callable[[str, bytes], bytes] | None = None) -> None:
    d = diff(a, b, normalize)
    assert not d, f"{what} differ in {len(d)} object(s):\n" + "\n".join(d[:40])


def clear(url: str, storage_options: Mapping[str, Any] | None = None) -> None:
    """Remove everything under ``url``."""
    fs, base = _fs(url, storage_options)
    if fs.exists(base):
        fs.rm(base, recursive=True)


def put(url: str, tree: Mapping[str, bytes], storage_options: Mapping[str, Any] | None = None) -> None:
    """Make ``url`` hold exactly ``tree`` (everything else under it is removed first)."""
    clear(url, storage_options)
    fs, base = _fs(url, storage_options)
    if store.is_remote(url):
        if tree:
            fs.pipe({f"{base}/{k}": v for k, v in tree.items()})
        return
    for k, v in tree.items():
        p = os.path.join(base, *k.split("/"))
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(v)


def subtree(tree: Mapping[str, bytes], *prefixes: str) -> Tree:
    """The objects of ``tree`` under any of ``prefixes``."""
    return {k: v for k, v in tree.items() if any(k == p or k.startswith(p.rstrip("/") + "/") for p in prefixes)}


def without(tree: Mapping[str, bytes], exclude: Iterable[str] = NOT_STORES) -> Tree:
    exclude = tuple(exclude)
    return {k: v for k, v in tree.items() if _keep(k, exclude)}


__all__ = ["NOT_STORES", "Tree", "snapshot", "stamps", "next_stamp_tick", "rewritten", "diff", "assert_same",
           "clear", "put", "subtree", "without"]
