"""The one task runner every stage uses: bounded submission, errors that travel as themselves.

``run_tasks(client, fn, items)`` yields ``fn(item)`` for every item. With a dask ``client`` at most
``window`` tasks are in flight (default: twice the cluster's threads), so the driver's memory and
the scheduler's graph stay O(window) whatever the number of units (the global downscale plans
~3.9 M shards); with ``client=None`` the items run one after another in this process, which is
what the synchronous cluster, the tests and a debugger want.

Errors: an :class:`~sm1km.errors.Sm1kmError` raised by a task (a bad input file, a refused store)
is caught on the worker, returned as a value and re-raised on the driver as the same exception
(same class, where, problem, fix: the family pickles through ``__reduce__``). It is returned rather
than raised so that dask's ``retries`` — meant for transient failures (a dropped S3 connection)
and lost workers — never re-runs a task whose input is simply bad. Any other exception propagates
as dask delivers it, after the retries. On the first error the remaining tasks are cancelled.

Fencing: the fencing tokens of the run locks this process holds (``sm1km.storage.lock.held_fences``:
lock generation, owner, margin) are bound to every task, so each shard write and ledger mark inside
it is checked against the lock object (:func:`sm1km.storage.store.commit_check`) and refused once the
run no longer holds its store. The driver loop checks the lock's local state before every submission
and before handing out every result: once the holder has fenced itself (or lost its lock) it raises
the lock's :class:`~sm1km.storage.lock.FencedError`, submits nothing more and yields nothing more
(so the stage commits nothing more); the tasks still in flight are cancelled.

Progress: a log line at every tenth of the known total (``total=`` or ``len(items)``); on a
terminal also a tqdm bar on stderr (``progress=None``, the default, shows one only when stderr is a
TTY, the log level is INFO or finer — not ``sm1km -q`` — and no ``CI`` variable is set; ``True`` /
``False`` force it). While a bar is shown the tenth-lines go to DEBUG, so the two do not interleave.
A ``progress`` callable is called as ``progress(done, total)`` after every finished task instead.
"""

from __future__ import annotations

import logging
import os
import sys
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from sm1km.errors import Sm1kmError
from sm1km.storage import store
from sm1km.storage.lock import Fence, held_fences

log = logging.getLogger(__name__)


class _Raised:
    """An Sm1kmError carried back from a task as a value (so that dask does not retry it)."""

    __slots__ = ("exc",)

    def __init__(self, exc: Sm1kmError):
        self.exc = exc


def _call(fn: Callable[[Any], Any], item: Any, fences: tuple[Fence, ...] = ()) -> Any:
    try:
        with store.fenced(fences):
            return fn(item)
    except Sm1kmError as exc:
        return _Raised(exc)


def _assert_held(fences: tuple[Fence, ...]) -> None:
    """The driver's check (no I/O): raise FencedError once a lock of this process fenced itself."""
    for f in fences:
        f.assert_held()


def _unwrap(result: Any, raise_errors: bool = True) -> Any:
    if isinstance(result, _Raised):
        if raise_errors:
            raise result.exc
        return result.exc
    return result


def default_window(client) -> int:
    """Tasks in flight: twice the cluster's threads (enough to keep it busy, O(1) in the region)."""
    if client is None:
        return 1
    try:
        return max(2, 2 * sum(client.nthreads().values()))
    except Exception:  # pragma: no cover - a scheduler that cannot say
        return 8


def bars_wanted(stream: Any = None) -> bool:
    """Whether a progress bar belongs on ``stream`` (stderr): a TTY, not quiet, not CI."""
    stream = sys.stderr if stream is None else stream
    if os.environ.get("CI") or os.environ.get("SM1KM_NO_PROGRESS"):
        return False
    if not log.isEnabledFor(logging.INFO):
        return False
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # a closed or foreign stream
        return False


class _Progress:
    """The tenth-lines in the log; and a tqdm bar, or the caller's ``progress(done, total)`` callback."""

    def __init__(self, name: str, total: int | None, progress: bool | Callable[[int, int | None], Any] | None = None):
        self.name, self.total, self.done = name, total, 0
        self._step = max(1, (total or 0) // 10)
        self._callback = progress if callable(progress) else None
        self._bar: Any = None
        if self._callback is None and (progress if progress is not None else bars_wanted()):
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=name, unit="task", file=sys.stderr, leave=False,
                             dynamic_ncols=True, mininterval=0.2)

    def tick(self) -> None:
        self.done += 1
        if self._bar is not None:
            self._bar.update(1)
        if self._callback is not None:
            self._callback(self.done, self.total)
        if self.total and (self.done == self.total or self.done % self._step == 0):
            log.log(logging.DEBUG if self._bar is not None else logging.INFO, "%s: %d/%d done", self.name,
                    self.done, self.total)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def run_tasks(client, fn: Callable[[Any], Any], items: Iterable[Any], *, window: int | None = None,
              name: str = "task", retries: int = 1, total: int | None = None,
              raise_errors: bool = True, ordered: bool = False,
              progress: bool | Callable[[int, int | None], Any] | None = None) -> Iterator[Any]:
    """Yield ``fn(item)`` for every item (completion order with a client, item order without).

    ``raise_errors=False`` yields an Sm1kmError raised by a task as the result of that item instead
    of raising it, so a stage can report every bad input file of a run at once (ingest does).
    ``ordered=True`` yields in item order with a client too: results that finish early wait (at
    most ``4 × window`` of them; submission pauses beyond that), so a reduction over the results
    (e.g. merging metric moments, whose float sums depend on order) gives the same bits every run.

    ``items`` may be a lazy iterator: it is consumed as tasks finish. An item's ``key`` attribute,
    if it has one, names its dask task (``<name>-<key>-<run token>``), so the dashboard shows which
    unit runs. ``fn`` must be picklable (a module-level function or a ``functools.partial`` of one).
    ``progress``: see the module docstring (None: a bar on a terminal only).
    """
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]  # hasattr() does not narrow an Iterable to Sized
    bar = _Progress(name, total, progress)
    try:
        yield from _run(client, fn, items, bar, window=window, name=name, retries=retries,
                        raise_errors=raise_errors, ordered=ordered)
    finally:
        bar.close()


def _run(client, fn: Callable[[Any], Any], items: Iterable[Any], progress: _Progress, *, window: int | None,
         name: str, retries: int, raise_errors: bool, ordered: bool) -> Iterator[Any]:
    it = iter(items)
    fences = held_fences()
    if client is None:
        for item in it:
            _assert_held(fences)
            result = _unwrap(_call(fn, item, fences), raise_errors)
            progress.tick()
            _assert_held(fences)
            yield result
        return
    from distributed import as_completed

    window = window or default_window(client)
    token = uuid.uuid4().hex[:8]
    ac = as_completed(loop=client.loop)  # this client's loop, not the default client's (there may be none)
    index: dict[str, int] = {}           # task key -> position of its item
    waiting: dict[int, Any] = {}         # ordered: results that finished before an earlier one
    n = 0
    next_out = 0

    def fill() -> None:
        nonlocal n
        while ac.count() < window and len(waiting) < 4 * window:
            item = next(it, _END)
            if item is _END:
                return
            _assert_held(fences)
            key = f"{name}-{getattr(item, 'key', None) or n}-{token}"
            index[key] = n
            ac.add(client.submit(_call, fn, item, fences, key=key, pure=False, retries=retries))
            n += 1

    fill()
    try:
        for fut in ac:
            result = fut.result()
            pos = index.pop(fut.key)
            fut.release()
            progress.tick()
            _assert_held(fences)
            if not ordered:
                fill()
                yield _unwrap(result, raise_errors)
                continue
            waiting[pos] = result
            ready = []
            while next_out in waiting:
                ready.append(waiting.pop(next_out))
                next_out += 1
            fill()
            for r in ready:
                yield _unwrap(r, raise_errors)
    finally:
        for fut in list(ac.futures):
            fut.cancel()


_END = object()


def map_tasks(client, fn: Callable[[Any], Any], items: Iterable[Any], **options: Any) -> list[Any]:
    """``[fn(item) for item in items]`` through :func:`run_tasks`, results in the order of ``items``."""
    return list(run_tasks(client, fn, list(items), ordered=True, **options))


__all__ = ["run_tasks", "map_tasks", "default_window", "bars_wanted"]
