"""Zarr v3 stores and the small objects beside them, on a local path or any fsspec URL (``s3://``),
the same code for both.

The pattern every stage follows (xarray-beam / ARCO style):

1. :func:`create_template` writes all metadata and coordinates (no data chunks),
2. independent tasks call :func:`write_region` (one task per shard) and mark the region done in
   a :class:`Ledger` (marker objects beside the store, under ``<root>/_ledger/<store>/``),
3. :func:`finalize` writes coverage attributes and consolidated metadata **last**, so readers
   over HTTP can open the store with one request, and a re-run skips regions already done.

Every object sm1km replaces as a whole (the root ``zarr.json`` at finalize, ledger markers, model
files, ``metrics.json``, ``published.json``, the ingest index) goes through :func:`put_atomic`: one
PUT on S3, write + rename locally, so a reader sees the old bytes or the new, never a part. Small
JSON documents are read with :func:`read_json` and written with :func:`write_json` (sorted keys,
so the bytes are reproducible). Permanent object-store failures (access denied, bucket gone)
become a :class:`~sm1km.errors.StoreError` (:func:`permanent_errors`); transient ones are retried
below us by botocore/s3fs.

Data damaged on the way (:func:`checksum_retries`): botocore validates the CRC32 that S3 returns
with a whole-object GET of an object uploaded with a checksum (botocore >= 1.36 sends one with every
PUT and validates by default, ``response_checksum_validation: when_supported``); a mismatch
(``FlexibleChecksumError``) is retried by s3fs like a dropped connection, and one that persists
through every retry (the object is damaged at rest) becomes a StoreError. A short read (fewer
bytes than ``Content-Length``) is retried by s3fs already. Not covered: ranged GETs (S3 returns no
checksum for a byte range), i.e. partial reads of sharded arrays and of files read through
``fs.open`` — see docs/operations.md, "Damaged data on the wire".

The attributes a store carries (CF/ACDD provenance, coverage, the packed int16 encoding) are built
in :mod:`sm1km.storage.attrs`; they are re-exported here because every stage reaches them as
``store.provenance_attrs`` etc.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import itertools
import json
import logging
import os
import posixpath
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeAlias, cast

import fsspec
import numpy as np
import numpy.typing as npt
import xarray as xr
import zarr

from sm1km.errors import StoreError

if TYPE_CHECKING:
    from zarr.core.metadata import ArrayV3Metadata

# re-exported (callers use store.now_iso(), store.provenance_attrs(...), ...); defined in storage.attrs
from sm1km.storage.attrs import CONVENTIONS as CONVENTIONS
from sm1km.storage.attrs import cf_int16_encoding as cf_int16_encoding
from sm1km.storage.attrs import coverage_attrs as coverage_attrs
from sm1km.storage.attrs import now_iso as now_iso
from sm1km.storage.attrs import provenance_attrs as provenance_attrs

log = logging.getLogger(__name__)

#: The modes :func:`open_group` accepts (zarr's own access modes).
GroupMode: TypeAlias = Literal["r", "r+", "a", "w", "w-"]
#: What :func:`zarr_target` returns: a local path, or an fsspec-backed zarr store for a remote URL.
ZarrTarget: TypeAlias = "str | zarr.storage.FsspecStore"


# --------------------------------------------------------------------------------------------
# URLs and filesystems
# --------------------------------------------------------------------------------------------
def is_remote(url: str) -> bool:
    return "://" in url and not url.startswith("file://")


def join(url: str, *parts: str) -> str:
    """Join URL/path parts with '/' (works for local paths and s3:// URLs)."""
    base = url.rstrip("/")
    return "/".join([base, *[p.strip("/") for p in parts if p]])


_CHECKSUM_RETRIES: list[bool] = []


def checksum_retries() -> None:
    """Make s3fs retry a GET whose body failed botocore's checksum validation (data damaged on the
    wire; by default s3fs gives up at once). Once per process, before the first S3 access."""
    if _CHECKSUM_RETRIES:
        return
    _CHECKSUM_RETRIES.append(True)
    try:
        from botocore.exceptions import FlexibleChecksumError  # type: ignore[import-untyped]
        from s3fs.core import S3_RETRYABLE_ERRORS, add_retryable_error  # type: ignore[import-untyped]
    except ImportError:  # no S3 support installed: nothing to retry
        return
    if FlexibleChecksumError not in S3_RETRYABLE_ERRORS:
        add_retryable_error(FlexibleChecksumError)


def _is_checksum_failure(exc: BaseException) -> bool:
    return type(exc).__name__ == "FlexibleChecksumError" or "did not match calculated checksum" in str(exc)


def filesystem(url: str, storage_options: Mapping[str, Any] | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """(fsspec filesystem, path-in-filesystem) for ``url``."""
    if is_remote(url):
        checksum_retries()
    try:
        fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    except Exception as exc:  # bad protocol / options
        raise StoreError(url, f"cannot open filesystem ({exc}).",
                         "check store.root and the storage options (endpoint_url, anon).") from None
    return fs, path


def zarr_target(url: str, storage_options: Mapping[str, Any] | None = None) -> ZarrTarget:
    """What xarray's ``to_zarr``/``open_zarr`` and ``zarr.open_group`` accept for this URL (a local
    path, or an FsspecStore for a remote URL)."""
    if not is_remote(url):
        return url.removeprefix("file://")
    checksum_retries()
    return zarr.storage.FsspecStore.from_url(url, storage_options=dict(storage_options or {}))


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _missing_bucket(url: str, storage_options: Mapping[str, Any] | None) -> str | None:
    """The bucket of an ``s3://`` URL if that bucket does not exist (zarr reports it as a missing group)."""
    if not url.startswith(("s3://", "s3a://")):
        return None
    bucket = url.split("://", 1)[1].split("/", 1)[0]
    try:
        fs, _ = filesystem(url, storage_options)
        fs.call_s3("head_bucket", Bucket=bucket)
    except FileNotFoundError:
        return bucket
    except Exception:  # denied, unreachable ...: not a verdict on the bucket
        return None
    return None


def _is_missing(exc: Exception) -> bool:
    return isinstance(exc, (FileNotFoundError, KeyError)) or "NoSuchBucket" in str(exc) or \
        "does not exist" in str(exc) or "not found" in str(exc).lower()


_DENIED = ("AccessDenied", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch")


def permanent_error(exc: BaseException, url: str, storage_options: Mapping[str, Any] | None = None) -> StoreError | None:
    """A StoreError for a *permanent* object-store failure (access denied, bucket gone), else None.

    Transient failures (5xx, SlowDown, dropped connections) are retried below us by botocore and
    s3fs; what still reaches a stage as one of these will not heal by retrying, so the stage stops
    with a clear message (CLI exit code 2) instead of a traceback. Finished regions stay in the ledger.
    """
    text = _describe(exc)
    again = "then re-run the same command: finished work is kept."
    if _is_checksum_failure(exc):
        return StoreError(url, f"an object read back from the store failed its checksum on every retry ({text}): "
                               "it is damaged in the store or on every path to it; nothing was computed from it.",
                          f"check the object store (and any proxy in between), {again} If it persists, re-run the "
                          "stage that wrote the damaged object.")
    if isinstance(exc, PermissionError) or any(s in text for s in _DENIED):
        return StoreError(url, f"access denied ({text}).",
                          "check the credentials in the environment and the bucket policy (a run needs read and "
                          f"write access under store.root), {again}")
    if isinstance(exc, (FileNotFoundError, KeyError)) or "NoSuchBucket" in text:
        bucket = _missing_bucket(url, storage_options)
        if bucket:
            return StoreError(url, f"the bucket '{bucket}' does not exist (or was deleted) ({text}).",
                              f"create the bucket, or fix store.root / store.endpoint_url in the config, {again}")
    return None


def _known_permanent(exc: BaseException, url: str, storage_options: Mapping[str, Any] | None) -> StoreError:
    """:func:`permanent_error` for a failure the caller already knows is permanent (denied, bucket gone)."""
    err = permanent_error(exc, url, storage_options)
    assert err is not None, f"not a permanent failure: {exc!r}"
    return err


@contextlib.contextmanager
def permanent_errors(url: str, storage_options: Mapping[str, Any] | None = None) -> Iterator[None]:
    """Re-raise permanent object-store failures inside the block as StoreError (:func:`permanent_error`)."""
    try:
        yield
    except (OSError, KeyError) as exc:
        err = permanent_error(exc, url, storage_options)
        if err is None:
            raise
        raise err from exc
    except Exception as exc:
        if not _is_checksum_failure(exc):
            raise
        raise (permanent_error(exc, url, storage_options) or exc) from exc


# --------------------------------------------------------------------------------------------
# open / create / write
# --------------------------------------------------------------------------------------------
def exists(url: str, storage_options: Mapping[str, Any] | None = None) -> bool:
    """True if a Zarr store (its root ``zarr.json``) exists at ``url``."""
    fs, path = filesystem(url, storage_options)
    try:
        return bool(fs.exists(posixpath.join(path, "zarr.json")))
    except PermissionError as exc:
        raise StoreError(url, f"access denied ({exc}).", "check the credentials in the environment.") from None


def open_dataset(url: str, storage_options: Mapping[str, Any] | None = None, *,
                 chunks: Any = None, decode: bool = True, consolidated: bool | None = None) -> xr.Dataset:
    """Open a store lazily with xarray (consolidated metadata if present); StoreError if absent."""
    try:
        with warnings.catch_warnings():
            # a store still being written has no consolidated metadata yet: that is expected here
            warnings.filterwarnings("ignore", message="Failed to open Zarr store with consolidated")
            ds: xr.Dataset = xr.open_zarr(zarr_target(url, storage_options), chunks=chunks, consolidated=consolidated,
                                          decode_cf=decode, mask_and_scale=decode, zarr_format=3)  # unannotated
            return ds
    except Exception as exc:
        if _is_missing(exc):
            if bucket := _missing_bucket(url, storage_options):
                raise StoreError(url, f"the bucket '{bucket}' does not exist (or was deleted).",
                                 "create the bucket, or fix store.root / store.endpoint_url in the config.") from None
            raise StoreError(url, "no Zarr store here.",
                             "run the stage that produces it first (see `sm1km run --help`).") from None
        raise StoreError(url, f"cannot open the Zarr store ({_describe(exc)}).",
                         "check the URL, credentials and that the store is not corrupt (`sm1km verify`).") from None


def open_group(url: str, storage_options: Mapping[str, Any] | None = None, mode: GroupMode = "r", *,
               use_consolidated: bool | None = None) -> zarr.Group:
    """The raw zarr group (for attributes and non-xarray access).

    ``use_consolidated=False`` reads the arrays' own metadata instead of the consolidated copy in
    the root ``zarr.json`` (what a writer appending to a published store needs, see storage.append).
    """
    try:
        return zarr.open_group(zarr_target(url, storage_options), mode=mode, zarr_format=3,
                               use_consolidated=use_consolidated)
    except Exception as exc:
        if bucket := _missing_bucket(url, storage_options):
            raise StoreError(url, f"the bucket '{bucket}' does not exist (or was deleted).",
                             "create the bucket, or fix store.root / store.endpoint_url in the config.") from None
        raise StoreError(url, f"cannot open the Zarr group ({_describe(exc)}).",
                         "check the URL and that the store exists.") from None


def array(group: zarr.Group, name: str) -> zarr.Array[Any]:
    """``group[name]`` for a name that sm1km's own templates make an array (zarr types it array-or-group)."""
    return cast("zarr.Array[Any]", group[name])


def read_window(arr: zarr.Array[Any], sel: tuple[Any, ...], url: str, producer: str) -> npt.NDArray[Any]:
    """``arr[sel]`` as numpy; a damaged object (truncated or corrupted shard: checksum or codec error)
    becomes a :class:`StoreError` naming the objects, their ledger markers and how to recompute them.

    ``url``: the store; ``producer``: the verb that writes it (``downscale`` for the master).
    """
    try:
        return np.asarray(arr[sel])
    except (ValueError, RuntimeError, OSError, EOFError) as exc:
        perm = permanent_error(exc, url, None) if isinstance(exc, OSError) else None
        if perm is not None:
            raise perm from None
        name = arr.path or arr.name or "array"
        grid = tuple(int(c) for c in v3_metadata(arr).chunk_grid.chunk_shape)  # type: ignore[attr-defined]
        dims = tuple(str(d) for d in (v3_metadata(arr).dimension_names or ()))
        ranges = []
        for s_, n, c in zip(sel, arr.shape, grid, strict=False):
            lo, hi, _ = s_.indices(n) if isinstance(s_, slice) else (int(s_), int(s_) + 1, 1)
            ranges.append(range(lo // c, max(hi - 1, lo) // c + 1))
        objects, markers = [], []
        for idx in itertools.islice(itertools.product(*ranges), 8):
            objects.append(f"{name}/c/" + "/".join(map(str, idx)))
            if len(dims) == len(idx):
                markers.append(region_key(**{d: slice(i * c, min((i + 1) * c, n)) for d, i, c, n
                                             in zip(dims, idx, grid, arr.shape, strict=True)}))
        store_name = url.rstrip("/").rsplit("/", 1)[-1]
        raise StoreError(join(url, name), f"cannot decode {', '.join(objects)} ({type(exc).__name__}: {exc}): "
                                          "the store is damaged (a truncated or corrupted object).",
                         f"delete the damaged object(s) and their ledger marker(s) _ledger/{store_name}/"
                         f"{{{', '.join(markers)}}}.json under the store root, then re-run `sm1km {producer}` to "
                         "recompute exactly them (or restore the store from a good copy).") from None


def v3_metadata(arr: zarr.Array[Any]) -> ArrayV3Metadata:
    """``arr.metadata`` as Zarr v3 metadata: every store here is opened with ``zarr_format=3``."""
    return cast("ArrayV3Metadata", arr.metadata)


def create_template(url: str, template: xr.Dataset, encoding: Mapping[str, Mapping[str, Any]] | None = None,
                    storage_options: Mapping[str, Any] | None = None, *, overwrite: bool = False) -> bool:
    """Write metadata + coordinates of ``template`` (a lazily-chunked Dataset) without data chunks.

    Returns True if the template was written, False if a compatible store already exists (resume).
    An existing store with different variables/shape raises StoreError unless ``overwrite``.
    """
    if exists(url, storage_options) and not overwrite:
        existing = open_dataset(url, storage_options, decode=False)
        mismatch = [v for v in template.data_vars if v not in existing.data_vars or
                    existing[v].shape != template[v].shape]
        if mismatch or dict(existing.sizes) != dict(template.sizes):
            raise StoreError(url, f"a store with a different layout already exists (variables/shape differ: "
                                  f"{mismatch or dict(existing.sizes)}).",
                             "choose another store.root, or remove the old store if it is obsolete.")
        log.info("store %s exists with the same layout: resuming", url)
        return False
    if overwrite and exists(url, storage_options):
        remove(url, storage_options)
    try:
        template.to_zarr(zarr_target(url, storage_options), mode="w", compute=False, consolidated=False,
                         zarr_format=3, encoding=dict(encoding or {}))
    except PermissionError as exc:
        raise StoreError(url, f"access denied while creating the store ({exc}).",
                         "check the credentials and bucket policy.") from None
    except Exception as exc:
        if _is_missing(exc):
            raise StoreError(url, f"cannot create the store: the bucket or folder does not exist ({exc}).",
                             "create the bucket first, or fix store.root.") from None
        raise
    return True


def write_region(url: str, block: xr.Dataset, region: Mapping[str, slice],
                 storage_options: Mapping[str, Any] | None = None) -> None:
    """Write ``block`` into the region of an existing store (one task per shard: never share a shard)."""
    commit_check(url)
    dims = set(region)
    drop = [v for v in block.variables if not dims.intersection(block[v].dims)]
    block = block.drop_vars(drop)
    block.to_zarr(zarr_target(url, storage_options), region=dict(region), mode="r+",
                  consolidated=False, zarr_format=3)


def update_attrs(url: str, attrs: Mapping[str, Any], storage_options: Mapping[str, Any] | None = None) -> None:
    g = open_group(url, storage_options, mode="r+")
    g.attrs.update(dict(attrs))


def finalize(url: str, storage_options: Mapping[str, Any] | None = None, attrs: Mapping[str, Any] | None = None) -> None:
    """Set final attributes (coverage, last_updated) and write consolidated metadata — always last.

    Both go into the root ``zarr.json`` in **one** write (an atomic PUT on S3, write + rename
    locally), built from the arrays' own metadata. HTTP readers read only that object to open the
    store, so at any moment they see the previous published state or the new one — never new
    attributes beside old shapes, nor a root without consolidated metadata (see docs/reading.md).
    """
    import dataclasses

    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.group import ConsolidatedMetadata, GroupMetadata

    commit_check(url)

    try:
        g = zarr.open_group(zarr_target(url, storage_options), mode="r", zarr_format=3, use_consolidated=False)
        members = {name: node.metadata for name, node in
                   sorted(g.members(max_depth=None, use_consolidated_for_children=False), key=lambda m: m[0])}
    except Exception as exc:
        raise StoreError(url, f"cannot read the store's metadata to consolidate it ({_describe(exc)}).",
                         "check the URL and that the store was created (create_template).") from None
    for name, meta in members.items():  # empty child groups: explicit empty consolidated metadata
        if isinstance(meta, GroupMetadata) and meta.consolidated_metadata is None:
            members[name] = dataclasses.replace(meta, consolidated_metadata=ConsolidatedMetadata(metadata={}))
    ConsolidatedMetadata._flat_to_nested(members)
    root = dataclasses.replace(g.metadata, attributes={**g.metadata.attributes, **dict(attrs or {})},
                               consolidated_metadata=ConsolidatedMetadata(metadata=members))
    payload = root.to_buffer_dict(default_buffer_prototype())["zarr.json"].to_bytes()
    put_atomic(join(url, "zarr.json"), payload, storage_options)


def put_atomic(url: str, payload: bytes, storage_options: Mapping[str, Any] | None = None) -> None:
    """Replace one object/file as a whole: readers see the old bytes or the new, never a part."""
    fs, path = filesystem(url, storage_options)
    if is_remote(url):
        with permanent_errors(url, storage_options):
            fs.pipe_file(path, payload)  # one PUT: atomic on S3 and S3-compatible stores
        return
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.{id(payload):x}.partial")
    with open(tmp, "wb") as f:
        f.write(payload)
    os.replace(tmp, path)


def json_bytes(doc: Any, *, indent: int | None = None, separators: tuple[str, str] | None = None,
               newline: bool = False, allow_nan: bool = True, default: Callable[[Any], Any] | None = None) -> bytes:
    """The bytes of a JSON document as sm1km writes them: keys sorted (reproducible), ASCII.

    ``indent``/``separators``/``allow_nan``/``default`` as in :func:`json.dumps`; ``newline`` adds a
    final line break. Each document keeps the layout it has always had (the bytes must not change).
    """
    text = json.dumps(doc, sort_keys=True, indent=indent, separators=separators, allow_nan=allow_nan,
                      default=default)
    return (text + "\n" if newline else text).encode()


def write_json(url: str, doc: Any, storage_options: Mapping[str, Any] | None = None, **layout: Any) -> None:
    """Write a small JSON document in one atomic put (:func:`put_atomic`); ``layout``: see :func:`json_bytes`."""
    put_atomic(url, json_bytes(doc, **layout), storage_options)


def read_json(url: str, storage_options: Mapping[str, Any] | None = None) -> Any:
    """The JSON document at ``url`` (a dict for sm1km's documents), or None if there is none.

    Content that is not UTF-8 JSON raises ValueError (``json.JSONDecodeError``/``UnicodeDecodeError``);
    other storage errors (OSError) propagate. Callers turn both into their own StoreError message.
    """
    fs, path = filesystem(url, storage_options)
    try:
        raw = fs.cat_file(path)
    except FileNotFoundError:
        return None
    return json.loads(raw.decode("utf-8"))


def remove(url: str, storage_options: Mapping[str, Any] | None = None) -> None:
    fs, path = filesystem(url, storage_options)
    if fs.exists(path):
        fs.rm(path, recursive=True)


# --------------------------------------------------------------------------------------------
# fencing: commits of a run that no longer holds its lock are refused
# --------------------------------------------------------------------------------------------
class CommitCheck(Protocol):
    def check(self, url: str) -> None: ...


#: the fencing tokens bound to the running task (``sm1km.storage.lock.Fence``; set by the task runner)
_FENCES: contextvars.ContextVar[tuple[CommitCheck, ...]] = contextvars.ContextVar("sm1km_fences", default=())


@contextlib.contextmanager
def fenced(fences: Iterable[CommitCheck]) -> Iterator[None]:
    """Bind fencing tokens to the commits made inside the block (this thread/context only)."""
    token = _FENCES.set(tuple(fences))
    try:
        yield
    finally:
        _FENCES.reset(token)


def commit_check(url: str) -> None:
    """Called before every shard write and ledger mark: each bound fence refuses (``FencedError``)
    a commit under its store root once its run no longer holds the lock (see ``storage/lock``)."""
    for fence in _FENCES.get():
        fence.check(url)


# --------------------------------------------------------------------------------------------
# ledger of finished regions
# --------------------------------------------------------------------------------------------
def iter_names(url: str, storage_options: Mapping[str, Any] | None = None, suffix: str = "", *,
               page: int = 1000, prefix: str = "", start_after: str | None = None) -> Iterator[str]:
    """Names (without ``suffix``) of the objects directly under ``url`` that end with ``suffix``
    (and start with ``prefix``; with ``start_after``: only names sorting after it), streamed: on
    S3 one ``ListObjectsV2`` request per ``page`` names (1000 at most, S3's page), locally
    ``os.scandir``; nothing when ``url`` does not exist. Temporary names (a leading dot) are left
    out locally. Order: the store's (S3: sorted; locally: the directory's)."""
    fs, path = filesystem(url, storage_options)
    cut = len(suffix)
    if not is_remote(url):
        try:
            with os.scandir(path) as it:
                for e in it:
                    if e.name.endswith(suffix) and e.name.startswith(prefix) and not e.name.startswith(".") \
                            and (start_after is None or e.name > start_after) and e.is_file():
                        yield e.name[:len(e.name) - cut]
        except (FileNotFoundError, NotADirectoryError):
            return
        return
    if url.startswith(("s3://", "s3a://")) and hasattr(fs, "_call_s3"):
        from fsspec.asyn import sync

        bucket, _, folder = path.partition("/")
        folder = folder.rstrip("/") + "/"
        kw: dict[str, Any] = {"Bucket": bucket, "Prefix": folder + prefix, "Delimiter": "/", "MaxKeys": min(page, 1000)}
        if start_after is not None:
            kw["StartAfter"] = folder + start_after
        with permanent_errors(url, storage_options):
            while True:
                out = sync(fs.loop, fs._call_s3, "list_objects_v2", **kw)  # (looked up per call)
                for obj in out.get("Contents", []):
                    name = obj["Key"][len(folder):]
                    if name.endswith(suffix):
                        yield name[:len(name) - cut]
                if not out.get("IsTruncated"):
                    return
                kw["ContinuationToken"] = out["NextContinuationToken"]
    try:  # another filesystem: one listing
        names = fs.ls(path, detail=False)
    except FileNotFoundError:
        return
    for n in sorted(names):
        base = posixpath.basename(n.rstrip("/"))
        if base.endswith(suffix) and base.startswith(prefix) and (start_after is None or base > start_after):
            yield base[:len(base) - cut]


class Ledger:
    """Marker objects for finished regions of one store: ``<root>/_ledger/<store_name>/<key>.json``.

    Markers are written only after a region's data is fully written, so a crash leaves the
    region unmarked and a re-run redoes it (and only it).
    """

    def __init__(self, root: str, store_name: str, storage_options: Mapping[str, Any] | None = None):
        self.url = join(root, "_ledger", store_name)
        self.storage_options = dict(storage_options or {})
        self.fs, self.path = filesystem(self.url, self.storage_options)

    def _key_path(self, key: str) -> str:
        return posixpath.join(self.path, f"{key}.json")

    def done(self, key: str) -> bool:
        with permanent_errors(self.url, self.storage_options):
            return bool(self.fs.exists(self._key_path(key)))

    def mark(self, key: str, info: Mapping[str, Any] | None = None) -> None:
        """Mark ``key`` done; ``info`` (JSON-able facts about the region) is the marker's content."""
        commit_check(self.url)
        with permanent_errors(self.url, self.storage_options):
            write_json(join(self.url, f"{key}.json"), dict(info or {}), self.storage_options)

    def info(self, key: str) -> dict[str, Any] | None:
        """What :meth:`mark` recorded for ``key`` (None if it is not marked)."""
        with permanent_errors(self.url, self.storage_options):
            info: dict[str, Any] | None = read_json(join(self.url, f"{key}.json"), self.storage_options)
            return info

    def keys(self) -> set[str]:
        try:
            names = self.fs.ls(self.path, detail=False)
        except FileNotFoundError:
            if _missing_bucket(self.url, self.storage_options):  # not "no markers yet": the bucket is gone
                raise _known_permanent(FileNotFoundError(self.url), self.url, self.storage_options) from None
            return set()
        except PermissionError as exc:
            raise _known_permanent(exc, self.url, self.storage_options) from None
        return {posixpath.basename(n)[:-5] for n in names if n.endswith(".json")}

    def iter_keys(self, page: int = 1000, prefix: str = "", start_after: str | None = None) -> Iterator[str]:
        """The marked keys (starting with ``prefix``, sorting after ``start_after``), streamed page
        by page (:func:`iter_names`): a ledger of millions of markers is scanned without holding
        its listing (``fs.ls`` holds every entry, and s3fs caches it). Order: the store's."""
        try:
            yield from iter_names(self.url, self.storage_options, ".json", page=page, prefix=prefix,
                                  start_after=start_after)
        except PermissionError as exc:
            raise _known_permanent(exc, self.url, self.storage_options) from None

    def clear(self) -> None:
        if self.fs.exists(self.path):
            self.fs.rm(self.path, recursive=True)


def region_key(**slices: slice) -> str:
    """Stable ledger key of a region, e.g. ``time-0-32_lat-0-120_lon-120-240``."""
    return "_".join(f"{k}-{s.start}-{s.stop}" for k, s in sorted(slices.items()))


# --------------------------------------------------------------------------------------------
# checksums
# --------------------------------------------------------------------------------------------
def sha256_file(url: str, storage_options: Mapping[str, Any] | None = None, bufsize: int = 1 << 20) -> str:
    fs, path = filesystem(url, storage_options)
    h = hashlib.sha256()
    with fs.open(path, "rb") as f:
        while chunk := f.read(bufsize):
            h.update(chunk)
    return h.hexdigest()


def checksum_tree(url: str, storage_options: Mapping[str, Any] | None = None) -> dict[str, str]:
    """sha256 of every object under ``url`` (relative key -> digest); {} if nothing is there."""
    fs, path = filesystem(url, storage_options)
    if not fs.exists(path):
        return {}
    out = {}
    for p in sorted(fs.find(path)):
        rel = posixpath.relpath(p, path) if not is_remote(url) else p[len(path.rstrip('/')) + 1:]
        out[rel] = hashlib.sha256(fs.cat_file(p)).hexdigest()
    return out
