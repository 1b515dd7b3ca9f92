"""The lock as an S3 object: conditional requests do what a local ``flock`` does on disk.

* create: a conditional PUT, ``If-None-Match: *`` (AWS S3, MinIO, moto honour it); the object is
  read back to catch stores that ignore the condition (there the last writer wins);
* renew: a PUT conditional on the ETag this run wrote last (``If-Match``). A 412 does not by itself
  mean the lock is lost: when a PUT is applied but its response is dropped, botocore retries it with
  the old ETag and gets 412 for the write that succeeded. So a 412 reads the lock back, and if it is
  still this run's (same owner uuid and generation: only this run writes that) the renewal counts,
  with the ETag read adopted;
* takeover / release: a DELETE conditional on the ETag seen (``If-Match``); stores without
  conditional deletes (``NotImplemented``) fall back to read, check the owner, delete.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from sm1km.storage.lock._common import age_s, owner_token, parse

log = logging.getLogger("sm1km.storage.lock")


def is_precondition(exc: BaseException) -> bool:
    """True if S3 refused a conditional request (the object changed or exists)."""
    cause = getattr(exc, "__cause__", None)
    code = (getattr(cause, "response", None) or getattr(exc, "response", None) or {}).get("Error", {}).get("Code")
    return code in ("PreconditionFailed", "ConditionalRequestConflict") or "pre-condition" in str(exc).lower()


class S3LockObject:
    """The lock object in a bucket; ``etag`` is the version this run wrote last."""

    def __init__(self, fs: Any, path: str):
        self.fs, self.path = fs, path
        self.etag: str | None = None

    def read(self) -> tuple[dict[str, Any] | None, str | None, bool]:
        """(parsed lock or None, ETag, exists)."""
        try:
            for attempt in range(5):
                self.fs.invalidate_cache(self.path)  # never trust a listing cached by another call
                try:
                    with self.fs.open(self.path, "rb") as f:  # s3fs reads with If-Match on the HEAD's ETag
                        raw = f.read()
                        tag = f.details.get("ETag")
                    break
                except OSError as exc:  # renewed between the HEAD and the GET: read again
                    changed = type(exc).__name__ == "FileExpired" or is_precondition(exc)  # s3fs: FileExpired
                    if isinstance(exc, FileNotFoundError) or not changed or attempt == 4:
                        raise
        except FileNotFoundError:
            return None, None, False
        return parse(raw), tag, True

    def create(self, payload: bytes, token: str) -> bool:
        """Create the lock object if absent; True if this call created it (and it reads back as ours)."""
        try:
            out = self.fs.pipe_file(self.path, payload, mode="create")
        except FileExistsError:
            return False
        self.etag = (out or {}).get("ETag") if isinstance(out, dict) else None
        info, tag, _ = self.read()  # a store that ignores If-None-Match: last writer wins
        if not info or owner_token(info) != token:
            return False
        self.etag = tag or self.etag
        return True

    def adopt(self, tag: str | None) -> None:
        """Take ``tag`` as the version this run wrote last (its own write, whose response was lost)."""
        self.etag = tag or self.etag

    def renew(self, payload: bytes, token: str, generation: int | None = None) -> dict[str, Any] | None:
        """Overwrite the lock only if it is still the version this run wrote.

        Returns the lock document now in force (ours), or None if the lock is not ours any more.
        """
        bucket, key, _ = self.fs.split_path(self.path)
        try:
            out = self.fs.call_s3("put_object", Bucket=bucket, Key=key, Body=payload, IfMatch=self.etag)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if not is_precondition(exc):
                raise
            info, tag, exists = self.read()  # our own write may be what moved the ETag (lost response)
            if not exists or owner_token(info) != token or (info or {}).get("generation") != generation:
                return None
            log.warning("run lock %s: a renewal was answered 412 but the lock is still this run's (a retried "
                        "write whose first response was lost); continuing with its ETag", self.path)
            self.adopt(tag)
            return info
        self.etag = out.get("ETag", self.etag)
        return parse(payload)

    def delete_if(self, token: str | None, tag: str | None) -> bool:
        """Delete the lock if it is still the version ``tag`` (without a tag: unconditionally).

        ``token`` (the owner seen) is checked only where the store has no conditional deletes.
        """
        bucket, key, _ = self.fs.split_path(self.path)
        kw = {"IfMatch": tag} if tag else {}
        try:
            self.fs.call_s3("delete_object", Bucket=bucket, Key=key, **kw)
        except FileNotFoundError:
            return False
        except OSError as exc:
            if is_precondition(exc):
                return False
            if kw and "NotImplemented" in str(exc):  # store without conditional deletes
                info, _, _ = self.read()
                if owner_token(info) != token:
                    return False
                self.fs.rm_file(self.path)
                return True
            raise
        self.fs.invalidate_cache(self.path)
        return True

    def release(self, token: str) -> bool:
        """Delete this run's lock: conditional on the ETag it wrote last, else on the one read now."""
        if self.delete_if(token, self.etag):
            return True
        info, tag, _ = self.read()  # our own renewal may have moved the ETag
        return owner_token(info) == token and self.delete_if(token, tag)

    def force_delete(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self.path)

    def age_s(self) -> float | None:
        return age_s(self.fs, self.path)
