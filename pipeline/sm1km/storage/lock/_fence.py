"""The fencing token: a lock generation that travels with every task and is checked at every commit.

The task runner (:mod:`sm1km.runtime.runner`) binds :func:`held_fences` to each task it submits;
inside a task, :func:`sm1km.storage.store.commit_check` (called before every shard write and every
ledger mark) runs :meth:`Fence.check`, which reads the lock object (one small GET on S3, a local
file read on disk) and refuses the commit with a :class:`FencedError` unless the lock is still this
run's — same owner uuid (a nonce per acquisition), same generation — *and* its lease still runs
for at least the safety margin. The holder fences itself at the same point (lease expiry minus the
margin, ``StoreLock.fence_at``), so workers and driver agree on when the run stopped owning the
store, and a takeover (only possible once the lease has expired) always comes after both.

What remains: a write already past its check when the holder stalls can still land after a
takeover if the stall outlasts the rest of the lease (at least the margin). Object stores offer no
condition across two objects; the margin is the bound, and the pipeline's writes are deterministic
(a late write carries the bytes the new holder writes too), while the ledger mark that would make
such a unit count as done is checked again right before it is written.

Cost: one GET of a ~500-byte object per check (each array's shard write and each ledger mark: three
for a downscale shard). ``SM1KM_FENCE_REUSE_S`` (default 0) lets a process reuse a positive answer
for that long (on the monotonic clock, so a stalled process re-checks when it resumes): safe against
takeovers after expiry while it stays below the margin, but it lets commits through for that long
after a ``--force-unlock``.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn, Protocol

from sm1km.errors import StoreError
from sm1km.storage import store
from sm1km.storage.lock._common import parse


class FencedError(StoreError):
    """A write by a run that no longer holds (or can no longer prove) its store's lock was refused."""


class _Holder(Protocol):
    """What a lock held by this process tells its fences (``StoreLock``)."""

    held: bool
    lost: str | None

    @property
    def fence_at(self) -> float: ...


#: owner uuid -> the lock this process holds with it (set by StoreLock while it is held)
_ACTIVE: dict[str, _Holder] = {}
_ACTIVE_LOCK = threading.Lock()
#: (lock url, owner, generation) -> monotonic time of the last positive check in this process
_LAST_OK: dict[tuple[str, str, int], float] = {}


def _norm(url: str) -> str:
    url = str(url)
    if store.is_remote(url):
        return url.rstrip("/")
    return os.path.abspath(url.removeprefix("file://")).rstrip("/")


@dataclass(frozen=True)
class Fence:
    """The fencing token of one held lock: picklable, checked by the commits of every task."""

    root: str
    url: str
    owner: str
    generation: int
    margin_s: float
    reuse_s: float = 0.0
    storage_options: Mapping[str, Any] = field(default_factory=dict, compare=False)

    # -- where it applies ------------------------------------------------------------------
    def covers(self, url: str) -> bool:
        """True for a URL under this lock's store root."""
        root, target = _norm(self.root), _norm(url)
        return target == root or target.startswith(root + "/")

    # -- checks ----------------------------------------------------------------------------
    def assert_held(self) -> None:
        """No I/O: refuse if this process holds the lock and has fenced itself or lost it."""
        holder = _ACTIVE.get(self.owner)
        if holder is None:
            return  # another process (a worker): only the lock object can tell
        if not holder.held or holder.lost:
            self._refuse(holder.lost or "this run no longer holds its lock")
        if time.time() >= holder.fence_at:
            self._refuse("its lease could not be renewed in time (it is past expiry minus the safety margin "
                         f"of {self.margin_s:.3g} s)")

    def check(self, url: str) -> None:
        """Refuse a commit under ``url`` unless the lock object is still this run's, with lease to spare."""
        if not self.covers(url):
            return
        self.assert_held()
        key = (self.url, self.owner, self.generation)
        last = _LAST_OK.get(key)
        if last is not None and time.monotonic() - last < self.reuse_s:
            return
        doc = self.read()
        now = time.time()
        if doc is None:
            self._refuse("the lock object is gone (released, removed by hand, or --force-unlock)")
        owner = (doc.get("owner") or {}) if isinstance(doc.get("owner"), dict) else {}
        gen = doc.get("generation")
        if owner.get("uuid") != self.owner or gen != self.generation:
            self._refuse(f"the lock is now generation {gen} of stage '{doc.get('stage', '?')}' on host "
                         f"{owner.get('host', '?')} (pid {owner.get('pid', '?')}); this task belongs to "
                         f"generation {self.generation}")
        exp = doc.get("expires_unix")
        if not isinstance(exp, (int, float)) or exp - now < self.margin_s:
            left = f"{exp - now:.3g} s" if isinstance(exp, (int, float)) else "an unknown time"
            self._refuse(f"its lease ends in {left}, less than the safety margin of {self.margin_s:.3g} s "
                         "(the holder stopped renewing it)")
        _LAST_OK[key] = time.monotonic()

    def read(self) -> dict[str, Any] | None:
        """The lock document now (one GET; None if there is none)."""
        fs, path = store.filesystem(self.url, self.storage_options)
        try:
            with store.permanent_errors(self.url, self.storage_options):
                raw = fs.cat_file(path)
        except FileNotFoundError:
            return None
        return parse(raw)

    def _refuse(self, why: str) -> NoReturn:
        _LAST_OK.pop((self.url, self.owner, self.generation), None)
        raise FencedError(self.url, f"a write to the store {self.root} was refused: {why}. Only the current "
                                    "holder of the run lock may write (fencing).",
                          "nothing to repair: the run that holds the lock now writes the store; re-run this "
                          "command once it has finished, it resumes where the stores stopped.")


def register(owner: str, holder: _Holder) -> None:
    with _ACTIVE_LOCK:
        _ACTIVE[owner] = holder


def unregister(owner: str) -> None:
    with _ACTIVE_LOCK:
        _ACTIVE.pop(owner, None)
    for key in [k for k in list(_LAST_OK) if k[1] == owner]:
        _LAST_OK.pop(key, None)


__all__ = ["Fence", "FencedError"]
