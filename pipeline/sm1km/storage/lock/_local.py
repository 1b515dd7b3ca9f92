"""Lock backends without conditional writes: a local (or mounted) disk, and other fsspec filesystems.

Local disk: the lock is created by writing a private temporary file and hard-linking it to the
lock's name (``link`` fails if the name exists, and the linked file is complete); where hard links
are not supported, ``open(..., "x")``. Renewals, takeovers and releases read the lock and check its
owner under an ``flock`` on the ``_locks`` folder, so no takeover slips in between the check and
the write. Other fsspec filesystems have no atomic create and no lock to hold: best effort.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

from sm1km.storage import store
from sm1km.storage.lock._common import age_s, owner_token, parse

log = logging.getLogger(__name__)


class _CheckedLockFile:
    """Renew/delete = read the lock, check its owner, write/remove it (under :meth:`mutex`)."""

    def __init__(self, fs: Any, path: str, url: str):
        self.fs, self.path, self.url = fs, path, url

    # hooks of the concrete backends
    def read(self) -> tuple[dict[str, Any] | None, str | None, bool]:
        raise NotImplementedError

    def _write(self, payload: bytes) -> None:
        raise NotImplementedError

    def _unlink(self) -> None:
        raise NotImplementedError

    @contextlib.contextmanager
    def mutex(self) -> Iterator[None]:
        yield

    # the operations the lock uses
    def adopt(self, tag: str | None) -> None:
        """Nothing to remember: renewals check the owner, not a version tag."""

    def renew(self, payload: bytes, token: str, generation: int | None = None) -> dict[str, Any] | None:
        """Overwrite the lock only if it is still ``token``'s: the document now in force, None = not ours."""
        with self.mutex():  # no takeover between the check and the write
            info, _, exists = self.read()
            if not exists or owner_token(info) != token:
                return None
            self._write(payload)
        return parse(payload)

    def delete_if(self, token: str | None, tag: str | None) -> bool:
        """Delete the lock if its owner is still ``token`` (``tag`` is not used without conditional deletes)."""
        with self.mutex():
            info, _, exists = self.read()
            if not exists or owner_token(info) != token:
                return False
            self._unlink()
        return True

    def release(self, token: str) -> bool:
        return self.delete_if(token, None)

    def force_delete(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._unlink()

    def age_s(self) -> float | None:
        return age_s(self.fs, self.path)


class LocalLockFile(_CheckedLockFile):
    """The lock as a file on a local disk (hard-link create, ``flock``-serialised checks)."""

    def read(self) -> tuple[dict[str, Any] | None, str | None, bool]:
        """(parsed lock or None, version tag = mtime in ns, exists)."""
        try:
            with open(self.path, "rb") as f:
                raw = f.read()
                tag = str(os.fstat(f.fileno()).st_mtime_ns)
        except FileNotFoundError:
            return None, None, False
        return parse(raw), tag, True

    def create(self, payload: bytes, token: str) -> bool:
        """Create the lock file if absent; True if this call created it."""
        folder = os.path.dirname(self.path)
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, f".{os.path.basename(self.path)}.{token}.tmp")
        with open(tmp, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        try:
            try:
                os.link(tmp, self.path)  # atomic, complete content, fails if the name exists
            except FileExistsError:
                return False
            except OSError:  # no hard links here: exclusive create
                try:
                    with open(self.path, "xb") as f:
                        f.write(payload)
                except FileExistsError:
                    return False
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        return True

    def _write(self, payload: bytes) -> None:
        store.put_atomic(self.path, payload)

    def _unlink(self) -> None:
        os.unlink(self.path)

    @contextlib.contextmanager
    def mutex(self) -> Iterator[None]:
        """An flock on the ``_locks`` folder: serialises takeovers, renewals and releases locally."""
        import fcntl

        folder = os.path.dirname(self.path)
        os.makedirs(folder, exist_ok=True)
        fd = os.open(folder, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


class FsspecLockFile(_CheckedLockFile):
    """The lock on another fsspec filesystem (no atomic create, no conditional writes): best effort."""

    def read(self) -> tuple[dict[str, Any] | None, str | None, bool]:
        try:
            raw = self.fs.cat_file(self.path)
        except FileNotFoundError:
            return None, None, False
        return parse(raw), None, True

    def create(self, payload: bytes, token: str) -> bool:
        log.warning("%s: this filesystem has no atomic create; the run lock is best effort", self.url)
        if self.fs.exists(self.path):
            return False
        self.fs.pipe_file(self.path, payload)
        return True

    def _write(self, payload: bytes) -> None:
        self.fs.pipe_file(self.path, payload)

    def _unlink(self) -> None:
        self.fs.rm_file(self.path)
