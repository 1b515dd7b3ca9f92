"""Object trees of a store root: list every object with its checksum and write stamp, compare two
trees, put a tree back, and tell whether an object was rewritten — on a local folder and on S3 alike.

The stage contract (``sm1km.testing.contract``) and the fault tests compare whole roots with
these: *every* object under ``store.root`` (chunks, shards, ``zarr.json`` with its attributes and
consolidated metadata, ledger markers, ingest indexes, model files, reports, exports), by content.
What a comparison leaves out is named here, once (:data:`NOT_STORES`), with the reason.

A tree is a mapping ``{key: bytes}`` (key relative to the root, ``/``-separated). :func:`listing`
lists a root in one pass as a :class:`RootTree`: the md5 of every object (on S3 the ETag of the
listing, which is the md5 of a single-part object's bytes, so nothing is downloaded to compare)
and its write stamp; the bytes are fetched only when asked for. The tiny worlds of the tests hold a
few hundred objects and a few MB, so a tree also fits in memory as a plain dict and can be put
back into a root (:func:`sync` writes only the objects that differ).
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from sm1km.storage import store

#: Top-level folders under ``store.root`` that are not stores, left out of comparisons after a kill:
#: ``_locks/`` holds the run lock (a SIGKILLed run leaves its lock behind; the next run takes it
#: over, see ``storage/lock.py``) and ``_staging/`` is the scratch of an ingest (a killed ingest
#: leaves its own ``_staging/ingest-<token>/``; the next run stages under a new token).
NOT_STORES = ("_locks", "_staging")
#: Left out of every comparison: the lock's fencing-token counter (``storage/lock``), one more at each
#: acquisition *by design* (a verb that takes the run lock, such as ``update``, leaves it changed); it
#: outlives releases so that a generation is never reused. The run lock itself is compared.
LOCK_STATE = ("_locks/generation.json",)

Tree = dict[str, bytes]


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _fs(url: str, storage_options: Mapping[str, Any] | None):
    fs, path = store.filesystem(url, storage_options)
    if hasattr(fs, "invalidate_cache"):
        fs.invalidate_cache()
    return fs, path.rstrip("/")


def _keep(key: str, exclude: Iterable[str]) -> bool:
    return not any(key == e or key.startswith(e.rstrip("/") + "/") for e in exclude)


class RootTree(Mapping[str, bytes]):
    """The objects under a root as listed at one moment: :attr:`digests` (md5) and :attr:`stamps`
    (local: inode + mtime in ns; S3: ``LastModified``, whole seconds) of every object; the bytes of
    an object are read on first access (from ``known`` when its md5 matches, else from the root)."""

    def __init__(self, url: str, storage_options: Mapping[str, Any] | None, digests: dict[str, str],
                 stamps: dict[str, Any], known: Iterable[Mapping[str, bytes]] = ()):
        self.url, self.storage_options = url, dict(storage_options or {})
        self.digests, self.stamps = digests, stamps
        self._bytes: dict[str, bytes] = {}
        for tree in known:
            sums = digests_of(tree)
            for k, d in sums.items():
                if k not in self._bytes and digests.get(k) == d:
                    self._bytes[k] = tree[k]

    def __getitem__(self, key: str) -> bytes:
        if key not in self.digests:
            raise KeyError(key)
        if key not in self._bytes:
            self._bytes.update(fetch(self.url, [key], self.storage_options))
        return self._bytes[key]

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self.digests))

    def __len__(self) -> int:
        return len(self.digests)

    def __contains__(self, key: object) -> bool:
        return key in self.digests

    def materialize(self) -> Tree:
        """Every object's bytes as a plain dict (fetching, in one batch, the ones not known yet)."""
        missing = [k for k in self.digests if k not in self._bytes]
        if missing:
            self._bytes.update(fetch(self.url, missing, self.storage_options))
        return {k: self._bytes[k] for k in sorted(self.digests)}


def listing(url: str, storage_options: Mapping[str, Any] | None = None, *, exclude: Iterable[str] = (),
            known: Iterable[Mapping[str, bytes]] = ()) -> RootTree:
    """Every object under ``url`` (but ``exclude``d top-level prefixes) with its md5 and write stamp;
    ``known``: trees whose bytes stand in for objects with the same md5 (nothing is fetched for them)."""
    exclude = tuple(exclude)
    fs, base = _fs(url, storage_options)
    digests: dict[str, str] = {}
    stamps: dict[str, Any] = {}
    if store.is_remote(url):
        entries = fs.find(base, detail=True) if fs.exists(base) else {}
        multipart = []
        for p, info in entries.items():
            key = p[len(base) + 1:]
            if not _keep(key, exclude):
                continue
            etag = str(info.get("ETag", "")).strip('"')
            stamps[key] = info.get("LastModified")
            if etag and "-" not in etag:
                digests[key] = etag  # a single-part object's ETag is the md5 of its bytes
            else:
                multipart.append(key)
        for k, v in fetch(url, multipart, storage_options).items():
            digests[k] = md5(v)
        return RootTree(url, storage_options, digests, stamps, known)
    data: dict[str, bytes] = {}
    for dirpath, _, names in os.walk(base):
        for n in names:
            p = os.path.join(dirpath, n)
            key = posixpath.relpath(p.replace(os.sep, "/"), base.replace(os.sep, "/"))
            if not _keep(key, exclude):
                continue
            st = os.stat(p)
            with open(p, "rb") as f:
                data[key] = f.read()
            digests[key] = md5(data[key])
            stamps[key] = (st.st_ino, st.st_mtime_ns)
    return RootTree(url, storage_options, digests, stamps, [data])


def snapshot(url: str, storage_options: Mapping[str, Any] | None = None, *,
             exclude: Iterable[str] = ()) -> Tree:
    """Every object under ``url``: ``{relative key: bytes}`` (``{}`` when nothing is there)."""
    return listing(url, storage_options, exclude=exclude).materialize()


def stamps(url: str, storage_options: Mapping[str, Any] | None = None, *,
           exclude: Iterable[str] = ()) -> dict[str, Any]:
    """A write stamp per object: ``(inode, mtime_ns)`` locally, ``LastModified`` on S3 (whole
    seconds: call :func:`next_stamp_tick` before the writes to compare with)."""
    return listing(url, storage_options, exclude=exclude).stamps


def fetch(url: str, keys: Iterable[str], storage_options: Mapping[str, Any] | None = None) -> Tree:
    """The bytes of some objects under ``url`` (one batched request on S3)."""
    keys = list(keys)
    if not keys:
        return {}
    fs, base = _fs(url, storage_options)
    paths = {f"{base}/{k}": k for k in keys}
    data = fs.cat(list(paths)) if len(paths) > 1 else {p: fs.cat_file(p) for p in paths}
    return {paths[p]: v for p, v in data.items()}


def next_stamp_tick(url: str) -> None:
    """Wait until a write now gets a later stamp than every write so far: S3's ``LastModified``
    has whole seconds (moto too), so sleep into the next second; local mtimes are in ns."""
    if store.is_remote(url):
        time.sleep(1.0 - (time.time() % 1.0) + 0.05)


def rewritten(before: Mapping[str, Any], after: Mapping[str, Any], keys: Iterable[str]) -> list[str]:
    """Of ``keys`` (present in ``before``), those written again since (stamp changed or gone)."""
    return sorted(k for k in keys if k in before and after.get(k) != before[k])


_DIGESTS: dict[int, tuple[Mapping[str, bytes], dict[str, str]]] = {}


def digests_of(tree: Mapping[str, bytes]) -> dict[str, str]:
    """md5 per object (a :class:`RootTree`'s own, without reading bytes; a plain tree's cached)."""
    if isinstance(tree, RootTree):
        return tree.digests
    hit = _DIGESTS.get(id(tree))
    if hit is not None and hit[0] is tree and len(hit[1]) == len(tree):
        return hit[1]
    sums = {k: md5(v) for k, v in tree.items()}
    _DIGESTS[id(tree)] = (tree, sums)
    return sums


def diff(a: Mapping[str, bytes], b: Mapping[str, bytes],
         normalize: Callable[[str, bytes], bytes] | None = None) -> list[str]:
    """Human-readable differences between two trees (empty list: identical)."""
    out = [f"only in first: {k}" for k in sorted(set(a) - set(b))]
    out += [f"only in second: {k}" for k in sorted(set(b) - set(a))]
    if normalize is None:
        da, db = digests_of(a), digests_of(b)
        out += [f"differs: {k}" for k in sorted(set(a) & set(b)) if da[k] != db[k]]
        return out
    for k in sorted(set(a) & set(b)):
        if normalize(k, a[k]) != normalize(k, b[k]):
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


def sync(url: str, tree: Mapping[str, bytes], storage_options: Mapping[str, Any] | None = None) -> None:
    """Make ``url`` hold exactly ``tree``: objects not in it are removed, objects that differ (or are
    missing) are written; the others are left alone."""
    now = listing(url, storage_options)
    want = digests_of(tree)
    extra = [k for k in now.digests if k not in want]
    write = {k: tree[k] for k in tree if now.digests.get(k) != want[k]}
    fs, base = _fs(url, storage_options)
    if extra:
        fs.rm([f"{base}/{k}" for k in extra])
    if store.is_remote(url):
        if write:
            fs.pipe({f"{base}/{k}": v for k, v in write.items()})
        return
    for k, v in write.items():
        p = os.path.join(base, *k.split("/"))
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(v)


def put(url: str, tree: Mapping[str, bytes], storage_options: Mapping[str, Any] | None = None) -> None:
    """Make ``url`` hold exactly ``tree`` (everything under it removed first, then all written)."""
    clear(url, storage_options)
    sync(url, tree, storage_options)


def subtree(tree: Mapping[str, bytes], *prefixes: str) -> Tree:
    """The objects of ``tree`` under any of ``prefixes``."""
    return {k: tree[k] for k in tree if any(k == p or k.startswith(p.rstrip("/") + "/") for p in prefixes)}


def without(tree: Mapping[str, bytes], exclude: Iterable[str] = NOT_STORES) -> Tree:
    exclude = tuple(exclude)
    return {k: tree[k] for k in tree if _keep(k, exclude)}


__all__ = ["NOT_STORES", "Tree", "RootTree", "md5", "listing", "snapshot", "stamps", "fetch", "next_stamp_tick",
           "rewritten", "digests_of", "diff", "assert_same", "clear", "sync", "put", "subtree", "without"]
