"""The lock as an S3 object: conditional requests do what a local ``flock`` does on disk.

* create: a conditional PUT, ``If-None-Match: *`` (AWS S3, MinIO, moto honour it); the object is
  read back to catch stores that ignore the condition (there the last writer wins);
* renew: a PUT conditional on the ETag this run wrote last (``If-Match``);
* takeover / release: a DELETE conditional on the ETag seen (``If-Match``); stores without
  conditional deletes (``NotImplemented``) fall back to read, check the owner, delete.
"""

from __future__ import annotations

import contextlib
from typing import Any

from sm1km.storage.lock._common import age_s, owner_token, parse


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

    def renew(self, payload: bytes, token: str) -> bool:
        """Overwrite the lock only if it is still the version this run wrote. False = not ours any more."""
        bucket, key, _ = self.fs.split_path(self.path)
        try:
            out = self.fs.call_s3("put_object", Bucket=bucket, Key=key, Body=payload, IfMatch=self.etag)
        except FileNotFoundError:
            return False
        except OSError as exc:
            if is_precondition(exc):
                return False
            raise
        self.etag = out.get("ETag", self.etag)
        return True

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
