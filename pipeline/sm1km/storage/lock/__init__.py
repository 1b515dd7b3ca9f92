"""One writer per store root: a lease lock at ``<root>/_locks/run.lock``.

Every command that writes under ``store.root`` (``ingest``, ``fuse``, ``train``, ``downscale``,
``aggregate``, ``run``/``demo`` and :class:`~sm1km.pipeline.Pipeline`) holds the lock while it
runs. A second run on the same root is refused with a :class:`~sm1km.errors.StoreError` naming
the holder (host, pid, stage, since when, until when). Readers never take it (consistent reads
during a write are the publish protocol's job, see docs/reading.md).

The lock object is JSON: ``owner`` (host, pid, user, uuid), ``generation``, ``stage``,
``acquired``, ``heartbeat`` and ``expires`` (UTC ISO and Unix seconds), ``ttl_s``, ``margin_s``,
``sm1km_version``.

* **Atomic creation.** Local: the JSON is written to a private temporary file and hard-linked to
  ``run.lock`` (``link`` fails if the name exists; ``open(..., "x")`` where links are not
  supported). S3: a conditional PUT, ``If-None-Match: *`` (AWS S3, MinIO, moto honour it); the
  lock is read back to catch stores that ignore the condition. The primitives (create, read,
  renew, conditional delete) live in the backends ``_local`` (local disk; other fsspec
  filesystems, best effort) and ``_s3``; this module is the policy (lease, takeover, loss, release).
* **Lease.** A daemon thread renews ``expires = now + ttl`` every ``heartbeat`` seconds (S3:
  conditional on the lock's ETag, ``If-Match``). A lock whose lease ran out is *stale* (its
  owner crashed, hung, or lost its node) and the next run takes it over with a warning; on the
  owner's own host a lock whose pid is gone is stale at once. Takeover is compare-and-delete
  (S3 ``If-Match`` DELETE; locally under an ``flock``), so two runs breaking the same stale lock
  cannot both win.
* **Loss.** If renewing finds someone else's lock (``--force-unlock`` elsewhere, or a takeover
  after this process stalled longer than the TTL), the run is interrupted at once and ends
  with a StoreError: it must not keep writing beside another writer. A renewal answered 412
  whose lock is still this run's (a retried PUT whose first response was lost) is not a loss.
* **Self-fencing.** The lease is *proven* until the ``expires`` of the last renewal the store
  confirmed. A watchdog thread fences the holder at ``fence_at`` = proven expiry minus the safety
  margin (``SM1KM_LOCK_MARGIN_S``, default TTL/3) if no renewal got through by then (store
  unreachable, 403, a stalled process): ``held`` becomes False, the main thread is interrupted,
  the task runner submits nothing more and commits nothing more, and every commit check refuses.
  A second run can take over only after the lease has expired, i.e. after this point.
* **Fencing token.** ``generation`` is the acquisition time in milliseconds, and more than the
  generation of the lock it takes over: it grows at every takeover, and from one acquisition to the
  next as far as the hosts' clocks agree (nothing outlives a release, so ``_locks/`` stays empty;
  a check compares the owner uuid too, so equal generations can never pass for one another). The
  runner binds the held lock's
  :class:`~sm1km.storage.lock._fence.Fence` (root, owner uuid, generation, margin) to every task;
  shard writes and ledger marks call :func:`sm1km.storage.store.commit_check`, which reads the lock
  object and refuses (:class:`FencedError`) unless owner and generation are still the task's and
  the lease has at least the margin left (see ``_fence``).
* **Release** on normal exit, on exceptions, on SIGTERM (Kubernetes pod deletion) and at
  interpreter exit; only the owner's own lock is deleted.

TTL, heartbeat and margin: ``SM1KM_LOCK_TTL_S`` (default 300), ``SM1KM_LOCK_HEARTBEAT_S``
(default min(30, TTL/4)) and ``SM1KM_LOCK_MARGIN_S`` (default TTL/3; at most TTL/2). Hosts' clocks must agree to well within the TTL (NTP). Manual removal: delete
``<root>/_locks/run.lock`` (docs/operations.md), or pass ``--force-unlock``.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import getpass
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn, TypeAlias

from sm1km._version import __version__
from sm1km.errors import StoreError
from sm1km.storage import store
from sm1km.storage.lock import _fence
from sm1km.storage.lock._common import owner_token
from sm1km.storage.lock._fence import Fence, FencedError
from sm1km.storage.lock._local import FsspecLockFile, LocalLockFile
from sm1km.storage.lock._s3 import S3LockObject

if TYPE_CHECKING:
    from sm1km.config import RunConfig

log = logging.getLogger(__name__)

LOCK_DIR = "_locks"
LOCK_NAME = "run.lock"
DEFAULT_TTL_S = 300.0
FORMAT = 1

#: what ``signal.signal`` returns and takes: a handler, ``SIG_DFL``/``SIG_IGN``, or None (not set from Python)
_SignalHandler: TypeAlias = "Callable[[int, FrameType | None], Any] | int | None"


@dataclass
class _Held:
    """A lock held by :func:`run_lock` and how many nested ``run_lock`` blocks of this process use it."""

    lock: StoreLock
    depth: int


_REGISTRY_LOCK = threading.RLock()
#: lock URL -> the held lock: nested acquisitions in one process share the lock
_HELD: dict[str, _Held] = {}
#: owner uuids of every lock this process holds right now (any StoreLock, in run_lock or not)
_LIVE_TOKENS: set[str] = set()
#: owner uuids of locks this process fenced itself out of: their objects stay live until their lease
#: ends (not stale at once by the "this process id, unknown lock" rule: this process left them)
_GIVEN_UP: set[str] = set()


def lock_url(root: str) -> str:
    """URL of the lock object of a store root."""
    return store.join(root, LOCK_DIR, LOCK_NAME)


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry (containers)
        return str(os.getuid()) if hasattr(os, "getuid") else "?"


# --------------------------------------------------------------------------------------------
# storage errors -> StoreError (the lock is the first thing a stage does on its store)
# --------------------------------------------------------------------------------------------
def _store_error(exc: BaseException, url: str, root: str) -> StoreError:
    """A clear StoreError for what the object store said (missing bucket, credentials, access)."""
    name = type(exc).__name__
    text = str(exc)
    bucket = root.split("://", 1)[-1].split("/", 1)[0] if store.is_remote(root) else None
    if name in ("NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError"):
        return StoreError(root, f"no usable S3 credentials were found ({name}: {text}).",
                          "export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (on Kubernetes: a Secret named in "
                          "cluster.kubernetes.env_from_secret), or set store.anon: true for a public bucket "
                          "(read-only).")
    if isinstance(exc, PermissionError) or "AccessDenied" in text or "Forbidden" in text or \
            "InvalidAccessKeyId" in text or "SignatureDoesNotMatch" in text:
        return StoreError(root, f"access denied to the store ({name}: {text}).",
                          "check the credentials in the environment and the bucket policy (the run needs "
                          "write access to store.root).")
    if bucket and (isinstance(exc, FileNotFoundError) or "NoSuchBucket" in text) and "bucket" in text.lower():
        return StoreError(root, f"the bucket '{bucket}' does not exist.",
                          f"create it first (e.g. `aws s3 mb s3://{bucket}`, with --endpoint-url for MinIO), "
                          "or fix store.root in the config.")
    if name in ("EndpointConnectionError", "ConnectTimeoutError", "ConnectionError", "ClientConnectorError") or \
            isinstance(exc, (ConnectionError, TimeoutError)):
        return StoreError(root, f"cannot reach the object store ({name}: {text}).",
                          "check store.endpoint_url and the network, then re-run the same command.")
    return StoreError(url, f"cannot use the run lock ({name}: {text}).",
                      "check store.root, the credentials and that the store is writable.")


# --------------------------------------------------------------------------------------------
# the lock
# --------------------------------------------------------------------------------------------
class StoreLock:
    """The lease lock of one store root. Use as a context manager, or :func:`run_lock`."""

    def __init__(self, root: str, storage_options: Mapping[str, Any] | None = None, *, stage: str = "run",
                 ttl_s: float | None = None, heartbeat_s: float | None = None, interrupt_on_loss: bool = True,
                 margin_s: float | None = None):
        self.root = root
        self.url = lock_url(root)
        self.storage_options = dict(storage_options or {})
        self.stage = stage
        self.ttl_s = float(ttl_s if ttl_s is not None else _env_float("SM1KM_LOCK_TTL_S", DEFAULT_TTL_S))
        hb = heartbeat_s if heartbeat_s is not None else _env_float("SM1KM_LOCK_HEARTBEAT_S",
                                                                      min(30.0, self.ttl_s / 4))
        self.heartbeat_s = max(0.05, float(hb))
        margin = margin_s if margin_s is not None else _env_float("SM1KM_LOCK_MARGIN_S", self.ttl_s / 3)
        self.margin_s = min(max(0.0, float(margin)), self.ttl_s / 2)
        self.interrupt_on_loss = interrupt_on_loss
        self.generation = 0
        #: the lease is proven (renewal confirmed by the store) until this Unix time
        self.proven_until = 0.0
        self._fence_mutex = threading.Lock()
        self._watchdog: threading.Thread | None = None
        self._self_fenced = False
        self.token = uuid.uuid4().hex
        self.remote = store.is_remote(root)
        self.s3 = self.remote and root.startswith(("s3://", "s3a://"))
        self.held = False
        self.lost: str | None = None  # why the lock was lost while held
        self.lost_at: float | None = None  # when (Unix seconds, this host's clock)
        self.acquired_at: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._old_sigterm: _SignalHandler = None
        try:
            self.fs, self.path = store.filesystem(self.url, self.storage_options)
        except StoreError:
            raise
        except Exception as exc:  # pragma: no cover - filesystem() already maps errors
            raise _store_error(exc, self.url, root) from None
        self._backend: S3LockObject | LocalLockFile | FsspecLockFile = (
            S3LockObject(self.fs, self.path) if self.s3 else
            FsspecLockFile(self.fs, self.path, self.url) if self.remote else
            LocalLockFile(self.fs, self.path, self.url))

    # -- content --------------------------------------------------------------------------
    def _payload(self, now: float) -> bytes:
        info = {
            "sm1km_lock": FORMAT,
            "owner": {"host": socket.gethostname(), "pid": os.getpid(), "user": _user(), "uuid": self.token},
            "stage": self.stage,
            "acquired": _iso(self.acquired_at or now),
            "acquired_unix": round(self.acquired_at or now, 3),
            "heartbeat": _iso(now),
            "heartbeat_unix": round(now, 3),
            "expires": _iso(now + self.ttl_s),
            "expires_unix": round(now + self.ttl_s, 3),
            "ttl_s": self.ttl_s,
            "margin_s": self.margin_s,
            "generation": self.generation,
            "sm1km_version": __version__,
        }
        return store.json_bytes(info, indent=1, newline=True)

    # -- primitives: the backend's (_local / _s3) ----------------------------------------
    def _read(self) -> tuple[dict[str, Any] | None, str | None, bool]:
        """(parsed lock or None, version tag, exists). Unparseable content -> ({}, tag, True)."""
        return self._backend.read()

    def _delete_if(self, token: str | None, tag: str | None) -> bool:
        """Delete the lock if it is still the one seen (owner ``token`` / version ``tag``)."""
        return self._backend.delete_if(token, tag)

    # -- policy ---------------------------------------------------------------------------
    def stale_reason(self, info: dict[str, Any] | None, now: float | None = None) -> str | None:
        """Why an existing lock may be taken over (None: it is live)."""
        now = time.time() if now is None else now
        if not info:
            return None
        owner = info.get("owner") or {}
        exp = info.get("expires_unix")
        if isinstance(exp, (int, float)) and now > exp:
            return f"its lease expired at {info.get('expires')} (no heartbeat for {now - exp + info.get('ttl_s', 0):.0f} s)"
        if owner.get("host") == socket.gethostname() and isinstance(owner.get("pid"), int):
            pid = owner["pid"]
            if pid == os.getpid() and owner.get("uuid") not in _LIVE_TOKENS | _GIVEN_UP:
                return f"it names this process id ({pid}) but was left by an earlier process (restarted container)"
            if pid != os.getpid() and not _pid_alive(pid):
                return f"its process {pid} no longer exists on this host"
        return None

    def describe(self, info: dict[str, Any] | None) -> str:
        if not info:
            return "an unreadable lock object"
        o = info.get("owner") or {}
        return (f"stage '{info.get('stage', '?')}' on host {o.get('host', '?')} (pid {o.get('pid', '?')}, user "
                f"{o.get('user', '?')}, lock {str(o.get('uuid', '?'))[:8]}, generation {info.get('generation', '?')}), "
                f"started {info.get('acquired', '?')}, "
                f"last heartbeat {info.get('heartbeat', '?')}, lease until {info.get('expires', '?')}")

    # -- public ---------------------------------------------------------------------------
    def acquire(self, force: bool = False) -> StoreLock:
        """Take the lock (or raise StoreError naming the holder). ``force``: break any lock first."""
        try:
            return self._acquire(force)
        except StoreError:
            raise
        except Exception as exc:
            raise _store_error(exc, self.url, self.root) from None

    def _acquire(self, force: bool) -> StoreLock:
        last = 0  # the generation of a lock seen in the way (the new one must be above it)
        for _ in range(5):
            now = time.time()
            self.acquired_at = now
            self.generation = max(last + 1, int(now * 1000))
            _LIVE_TOKENS.add(self.token)  # before it exists: a thread of this process must not think it stale
            created = False
            try:
                created = self._backend.create(self._payload(now), self.token)
            finally:
                if not created:
                    _LIVE_TOKENS.discard(self.token)
            if created:
                self._on_acquired(now + self.ttl_s)
                return self
            info, tag, exists = self._read()
            if not exists:
                continue  # released meanwhile: try again
            owner = owner_token(info)
            seen = (info or {}).get("generation")
            if isinstance(seen, int):
                last = max(last, seen)
            if owner == self.token and seen == self.generation:
                # our own create, whose response was lost (the retry found the object existing)
                log.warning("run lock %s: the create was answered 'exists' but the lock is this run's (a retried "
                            "write whose first response was lost); holding it", self.url)
                self._backend.adopt(tag)
                _LIVE_TOKENS.add(self.token)
                exp = (info or {}).get("expires_unix")
                self._on_acquired(float(exp) if isinstance(exp, (int, float)) else now + self.ttl_s)
                return self
            if force:
                log.warning("--force-unlock: breaking the lock of %s (%s)", self.describe(info), self.url)
                if info:
                    self._delete_if(owner, tag)
                else:
                    self._backend.force_delete()
                continue
            why = self.stale_reason(info, now)
            if why is None and not info:
                # unparseable: a foreign or torn object; stale once older than the TTL
                age = self._backend.age_s()
                why = f"it is unreadable and {age:.0f} s old" if age is not None and age > self.ttl_s else None
            if why is not None:
                log.warning("taking over a stale run lock (%s): %s — held by %s", self.url, why, self.describe(info))
                if info:
                    self._delete_if(owner, tag)
                else:
                    self._backend.force_delete()
                continue
            raise StoreError(self.url, f"the store {self.root} is being written by another run: {self.describe(info)}. "
                                       "Two runs writing one store can corrupt it, so this one stops here.",
                             "wait for that run to finish (its lock goes when it exits; a crashed run's lock expires "
                             f"{self.ttl_s:.0f} s after its last heartbeat), or, if you are sure it is dead, re-run "
                             f"with --force-unlock (or delete {self.url}).")
        raise StoreError(self.url, "could not take the run lock after 5 attempts (other runs keep taking it).",
                         "make sure only one run writes this store.root, then re-run.")

    def _on_acquired(self, proven_until: float) -> None:
        self.held = True
        self.lost = None
        self.proven_until = proven_until
        _LIVE_TOKENS.add(self.token)
        _fence.register(self.token, self)
        log.info("run lock taken: %s (stage %s, generation %d, lease %g s, heartbeat %g s, margin %g s)", self.url,
                 self.stage, self.generation, self.ttl_s, self.heartbeat_s, self.margin_s)
        self._stop.clear()
        self._thread = threading.Thread(target=self._heartbeat_loop, name="sm1km-lock-heartbeat", daemon=True)
        self._thread.start()
        self._watchdog = threading.Thread(target=self._watchdog_loop, name="sm1km-lock-watchdog", daemon=True)
        self._watchdog.start()
        self._install_sigterm()

    @property
    def fence_at(self) -> float:
        """Unix time at which this holder stops itself unless a renewal is confirmed before."""
        return self.proven_until - self.margin_s

    def fence(self) -> Fence:
        """The fencing token of this lock, for the tasks of the run (picklable)."""
        reuse = _env_float("SM1KM_FENCE_REUSE_S", 0.0)
        return Fence(root=self.root, url=self.url, owner=self.token, generation=self.generation,
                     margin_s=self.margin_s, reuse_s=max(0.0, min(reuse, self.margin_s / 2)),
                     storage_options=self.storage_options)

    def _renew_once(self) -> bool:
        """One renewal; True if the store confirmed it (the proven lease moves on), else False.

        Raises what the store raised (transient trouble). Sets ``lost`` and fences if the lock is
        not ours any more.
        """
        doc = self._backend.renew(self._payload(time.time()), self.token, self.generation)
        if doc is None:
            if not self._stop.is_set():
                info, _, _ = self._read()
                self._lose(f"the lock was removed or taken over by {self.describe(info) if info else 'nobody'}")
            return False
        exp = doc.get("expires_unix")
        if isinstance(exp, (int, float)):
            with self._fence_mutex:
                if self.held:
                    self.proven_until = max(self.proven_until, float(exp))
        return True

    def _heartbeat_loop(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            if not self.held:
                return
            try:
                self._renew_once()
            except Exception as exc:  # transient store trouble: keep trying until the lease says otherwise
                log.warning("run lock %s: heartbeat failed (%s: %s); retrying (this run stops itself at %s "
                            "unless a renewal gets through)", self.url, type(exc).__name__, exc, _iso(self.fence_at))
                continue
            if not self.held:
                return

    def _watchdog_loop(self) -> None:
        """Fence this holder once its lease is no longer proven with the safety margin to spare."""
        while self.held:
            delay = self.fence_at - time.time()
            if delay <= 0:
                self._lose(f"its lease could not be renewed in time: no renewal was confirmed by the store since "
                           f"{_iso(self.proven_until - self.ttl_s)}, and it expires at {_iso(self.proven_until)}; "
                           f"this run stopped itself {self.margin_s:.3g} s before (self-fencing), so that the next "
                           "run can take over without two writers", fenced=True)
                return
            if self._stop.wait(min(delay, max(self.heartbeat_s, 0.05))):
                return

    def _lose(self, why: str, *, fenced: bool = False) -> None:
        """Stop holding: ``held`` False, the main thread interrupted (once)."""
        with self._fence_mutex:
            if not self.held or self._stop.is_set():
                return
            self.held = False
            self.lost = why
            self.lost_at = time.time()
            self._self_fenced = fenced
        _GIVEN_UP.add(self.token)
        _LIVE_TOKENS.discard(self.token)
        log.error("run lock %s lost while writing: %s; stopping this run", self.url, why)
        if self.interrupt_on_loss:
            _interrupt_main(self.url)

    def refresh(self) -> None:
        """Renew the lease now (the heartbeat thread does this on its own)."""
        if not self.held or not self._renew_once():
            raise StoreError(self.url, "the run lock is no longer held by this run.", "re-run the command.")

    def release(self) -> None:
        """Stop the heartbeat and delete the lock if it is still ours (idempotent)."""
        self._stop.set()
        for t in (self._thread, self._watchdog):
            if t is not None and t is not threading.current_thread():
                t.join(timeout=10)
        self._thread = self._watchdog = None
        self._restore_sigterm()
        _LIVE_TOKENS.discard(self.token)
        _fence.unregister(self.token)
        if not self.held:
            if self._self_fenced:
                # fenced itself, nobody took over yet: give the lock back if it is still ours (best effort)
                self._self_fenced = False
                with contextlib.suppress(Exception):
                    if self._backend.release(self.token):
                        log.info("run lock released after self-fencing: %s", self.url)
            return
        self.held = False
        try:
            deleted = self._backend.release(self.token)
            if deleted:
                log.info("run lock released: %s", self.url)
            else:
                log.warning("run lock %s was gone or no longer this run's at release: left as it is", self.url)
        except Exception as exc:  # never mask the stage's own outcome
            log.warning("could not release the run lock %s (%s: %s); it expires after %.0f s or remove it by hand",
                        self.url, type(exc).__name__, exc, self.ttl_s)

    # -- SIGTERM: release on pod deletion ---------------------------------------------------
    def _install_sigterm(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        try:
            if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
                self._old_sigterm = signal.signal(signal.SIGTERM, _sigterm_to_exit)
        except (ValueError, OSError):  # not in the main interpreter thread
            self._old_sigterm = None

    def _restore_sigterm(self) -> None:
        if self._old_sigterm is not None and threading.current_thread() is threading.main_thread():
            with contextlib.suppress(ValueError, OSError):
                signal.signal(signal.SIGTERM, self._old_sigterm)
        self._old_sigterm = None

    def __enter__(self) -> StoreLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self._release_or_raise(" (`sm1km verify` checks them)")

    def _release_or_raise(self, hint: str) -> None:
        """Release; if the lock was lost while it was held, raise the StoreError that says so."""
        lost = self.lost
        self.release()
        if lost:
            raise StoreError(self.url, f"this run lost its lock while writing: {lost}.",
                             "check that the other run has finished, then re-run this command: it resumes where "
                             f"the stores stopped{hint}.")


def _sigterm_to_exit(signum: int, frame: FrameType | None) -> NoReturn:
    raise SystemExit(128 + signum)


def _interrupt_main(url: str) -> None:
    """Raise in the main thread through the first of SIGINT / SIGTERM that Python handles.

    A job started with ``&`` from a script (or under some supervisors) inherits SIGINT ignored, and
    ``_thread.interrupt_main()`` then does nothing: the run would go on writing without its lock.
    SIGTERM's handler (installed by the lock) raises SystemExit instead; either way the lock's
    ``__exit__`` turns it into the "lost its lock" StoreError.
    """
    import _thread

    for sig in (signal.SIGINT, signal.SIGTERM):
        if callable(signal.getsignal(sig)):
            _thread.interrupt_main(sig)
            return
    log.error("run lock %s: cannot interrupt the main thread (SIGINT and SIGTERM are not handled by Python "
              "here); the run stops at its next lock check", url)


@atexit.register
def _release_all() -> None:
    with _REGISTRY_LOCK:
        held = [entry.lock for entry in _HELD.values()]
        _HELD.clear()
    for lk in held:
        lk.release()


# --------------------------------------------------------------------------------------------
# entry points
# --------------------------------------------------------------------------------------------
def held_fences() -> tuple[Fence, ...]:
    """The fencing tokens of every lock this process holds now (what the task runner binds to tasks)."""
    with _fence._ACTIVE_LOCK:
        holders = list(_fence._ACTIVE.values())
    return tuple(h.fence() for h in holders if isinstance(h, StoreLock) and h.held)


def read_lock(root: str, storage_options: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """The current lock of a store root (None if unlocked)."""
    info, _, exists = StoreLock(root, storage_options)._read()
    return info if exists else None


def force_unlock(root: str, storage_options: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """Remove whatever lock a store root has; returns what it said (None if there was none)."""
    lk = StoreLock(root, storage_options)
    info, tag, exists = lk._read()
    if not exists:
        return None
    log.warning("removing the run lock of %s (%s)", lk.describe(info), lk.url)
    if info and lk._delete_if(owner_token(info), tag):
        return info
    lk._backend.force_delete()
    return info


@contextlib.contextmanager
def run_lock(cfg: RunConfig, stage: str = "run", *, force: bool = False, ttl_s: float | None = None
             ) -> Iterator[StoreLock]:
    """Hold the lock of ``cfg.store.root`` for the block. Re-entrant within one process.

    Inside the block this thread's commits (``store.commit_check``: shard writes, ledger marks,
    finalize) are fenced by the lock, like those of the tasks the runner submits.
    """
    root = cfg.store.root
    url = lock_url(root)
    with _REGISTRY_LOCK:
        entry = _HELD.get(url)
        if entry is not None:
            entry.depth += 1
    if entry is not None:
        try:
            yield entry.lock
        finally:
            with _REGISTRY_LOCK:
                entry.depth -= 1
        return
    lk = StoreLock(root, cfg.store.storage_options(), stage=stage, ttl_s=ttl_s)
    lk.acquire(force=force)
    with _REGISTRY_LOCK:
        _HELD[url] = _Held(lk, 1)
    try:
        with store.fenced((lk.fence(),)):  # the driver's own commits (template, finalize, marks) are checked too
            yield lk
    finally:
        with _REGISTRY_LOCK:
            _HELD.pop(url, None)
        lk._release_or_raise("")


__all__ = ["StoreLock", "run_lock", "read_lock", "force_unlock", "lock_url", "held_fences",
           "Fence", "FencedError", "LOCK_DIR", "LOCK_NAME", "DEFAULT_TTL_S"]
