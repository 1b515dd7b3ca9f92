"""The run lock under faults: lost responses, renewals that keep failing, a stalled holder, a takeover
while tasks run — on S3 (moto server) through the fault proxy (tests/faultproxy.py), short TTLs.

* a renewal whose PUT is applied but whose response is dropped (botocore retries with the old ETag
  and gets 412) keeps the lock: it is read back, still this run's, and its ETag adopted; the same
  for a lost response of the lock's creation;
* renewals refused for good (403): the holder fences itself before its lease ends (``held`` False,
  its fence refuses commits), a second run is refused until the lease has expired, then takes over
  with the next generation, and the first run's fencing token is refused by the store check;
* a takeover while tasks run on worker processes: their later commits are refused (they read the
  lock object), the driver stops with FencedError, no marker is written after the takeover;
* whole ``sm1km downscale`` runs (subprocesses, as a job runs): one renewal response lost → the run
  completes; renewals denied → the run stops itself, a second run takes over; a SIGSTOPped holder
  → the other run takes over, and after SIGCONT the first one's commits are refused. In each case
  the master equals the uninterrupted reference run and no write of the first run lands after the
  second took the lock.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import pickle
import re
import signal
import time
import uuid
from pathlib import Path

import pytest

import faults_world as FW
import proc_helpers as P
from faultproxy import FaultPlan, FaultProxy
from sm1km.errors import StoreError
from sm1km.storage import store
from sm1km.storage.lock import FencedError, StoreLock, force_unlock, read_lock
from sm1km.testing import trees

pytestmark = [pytest.mark.network]

LOCK_PATH = "_locks/run.lock"
#: the lease where the holder must keep its lock: short, yet long enough that a busy 2-core machine
#: renews in time (fenced after 2/3 TTL without a confirmed renewal; a renewal whose response is
#: dropped takes botocore's backoff, the 412 and a read-back: ~2 s under load)
TTL_S = 6.0
TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def proxy(moto_server):
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    p = FaultProxy(moto_server, record=True).start()
    yield p
    p.stop()


@pytest.fixture
def lock_root(s3_bucket, proxy):
    """(root, storage options through the proxy, storage options straight to moto)."""
    bucket, direct = s3_bucket
    proxy.configure(FaultPlan())
    proxy.reset_stats()
    yield f"s3://{bucket}/run", {**direct, "endpoint_url": proxy.url}, direct
    proxy.configure(FaultPlan())


def _wait(predicate, timeout: float, what: str) -> None:
    P.poll_until(predicate, timeout, 0.02, what=what)


def _faults(proxy, kind: str) -> list[tuple[str, str, str]]:
    return [f for f in proxy.stats()["log"] if f[0] == kind]


# ------------------------------------------------------------------------------------------------
# the lock alone
# ------------------------------------------------------------------------------------------------
def test_a_renewal_whose_response_is_lost_keeps_the_lock(lock_root, proxy, caplog):
    root, so, direct = lock_root
    proxy.configure(FaultPlan(fraction=1.0, kinds=("drop_after",), paths=(LOCK_PATH,), methods=("PUT",),
                              skip_first=1, max_faults=1))   # the first PUT is the creation
    with caplog.at_level("WARNING", logger="sm1km.storage.lock"):
        lk = StoreLock(root, so, stage="ingest", ttl_s=TTL_S, heartbeat_s=0.3, interrupt_on_loss=False).acquire()
        try:
            _wait(lambda: _faults(proxy, "drop_after"), 20, "a renewal whose response is dropped")
            t_fault = time.time()
            _wait(lambda: read_lock(root, direct)["heartbeat_unix"] > t_fault + 0.6, 30, "renewals after it")
            assert lk.held and lk.lost is None
            assert read_lock(root, direct)["owner"]["uuid"] == lk.token
            assert "answered 412 but the lock is still this run's" in caplog.text
            assert "lost while writing" not in caplog.text
        finally:
            lk.release()
    assert read_lock(root, direct) is None
    (kind, method, path), = _faults(proxy, "drop_after")
    assert method == "PUT" and LOCK_PATH in path
    with StoreLock(root, direct, ttl_s=3) as again:   # the immediate retry is not blocked
        assert again.generation > lk.generation


def test_a_lost_response_of_the_creation_is_recognised(lock_root, proxy, caplog):
    root, so, direct = lock_root
    proxy.configure(FaultPlan(fraction=1.0, kinds=("drop_after",), paths=(LOCK_PATH,), methods=("PUT",),
                              max_faults=1))
    with caplog.at_level("WARNING", logger="sm1km.storage.lock"):
        with StoreLock(root, so, ttl_s=TTL_S, heartbeat_s=0.3, interrupt_on_loss=False) as lk:
            assert _faults(proxy, "drop_after"), "the creation's response was not dropped"
            assert read_lock(root, direct)["owner"]["uuid"] == lk.token
            time.sleep(0.5)
            assert lk.held and lk.lost is None
    assert read_lock(root, direct) is None
    assert "the create was answered 'exists' but the lock is this run's" in caplog.text


def test_renewals_denied_for_good_fence_the_holder_before_its_lease_ends(lock_root, proxy, caplog):
    root, so, direct = lock_root
    proxy.configure(FaultPlan(permanent="access_denied", paths=(LOCK_PATH,), methods=("PUT", "DELETE"),
                              skip_first=1))   # after the creation: every renewal and release is refused
    first = StoreLock(root, so, stage="downscale", ttl_s=3, heartbeat_s=0.2, interrupt_on_loss=False).acquire()
    fence = first.fence()
    worker_copy = pickle.loads(pickle.dumps(fence))   # what a task on a worker carries
    lease_end = read_lock(root, direct)["expires_unix"]  # never renewed: the store's view of the lease
    try:
        _wait(lambda: not first.held, 30, "the holder to fence itself")
        assert first.lost_at is not None and first.lost_at < lease_end
        assert "could not be renewed in time" in first.lost and "self-fencing" in first.lost
        assert proxy.stats()["faults"].get("access_denied", 0) >= 1
        # its own commits are refused at once (no I/O), nothing is written
        with store.fenced((fence,)), pytest.raises(FencedError, match="was refused"):
            store.Ledger(root, "probe.zarr", so).mark("u0", {})
        assert not store.exists(store.join(root, "_ledger", "probe.zarr", "u0.json"), direct)
        # a second run: refused while the lease lasts, takes over once it has expired
        with caplog.at_level("WARNING", logger="sm1km.storage.lock"):
            second = StoreLock(root, direct, stage="downscale", ttl_s=30)
            while True:
                try:
                    second.acquire()
                    break
                except StoreError as exc:
                    assert "being written by another run" in str(exc) and f"generation {first.generation}" in str(exc)
                    assert time.time() <= lease_end + 5
                    time.sleep(0.05)
        try:
            assert second.acquired_at > lease_end and "taking over a stale run lock" in caplog.text
            assert second.generation > first.generation
            first.release()   # its delete is denied, and the lock is not its own any more anyway
            assert read_lock(root, direct)["owner"]["uuid"] == second.token
            # the first run's token, as a worker holds it, is refused by the store check
            with pytest.raises(FencedError, match=f"now generation {second.generation} .* generation {first.generation}"):
                worker_copy.check(store.join(root, "master.zarr"))
            second.fence().check(store.join(root, "master.zarr"))   # the holder's own passes
        finally:
            second.release()
    finally:
        first.release()
    with pytest.raises(StoreError, match="lost its lock while writing"):
        first._release_or_raise("")


def test_the_fence_refuses_a_lock_that_was_removed_or_whose_lease_is_running_out(lock_root):
    root, _, direct = lock_root
    with StoreLock(root, direct, ttl_s=30, heartbeat_s=10, interrupt_on_loss=False) as lk:
        fence = pickle.loads(pickle.dumps(lk.fence()))
        from sm1km.storage.lock import _fence

        _fence.unregister(lk.token)  # as in another process: only the lock object can tell
        fence.check(store.join(root, "fused.zarr"))
        fence.check("s3://elsewhere/other-root/x.zarr")   # not this store's: not checked
        tight = type(fence)(**{**fence.__dict__, "margin_s": 40.0, "reuse_s": 0.0})
        with pytest.raises(FencedError, match="lease ends in .* less than the safety margin"):
            tight.check(store.join(root, "fused.zarr"))
        force_unlock(root, direct)
        with pytest.raises(FencedError, match="lock object is gone"):
            type(fence)(**{**fence.__dict__, "reuse_s": 0.0}).check(store.join(root, "fused.zarr"))
        lk.held = False  # removed under it: nothing of ours to release


# ------------------------------------------------------------------------------------------------
# a takeover while tasks run on worker processes
# ------------------------------------------------------------------------------------------------
def _probe_task(i: int, root: str, so: dict) -> int:
    """A unit of work: compute (sleep), then commit a ledger marker saying when it was computed."""
    time.sleep(0.4)
    store.Ledger(root, "probe.zarr", so).mark(f"u{i:02d}", {"i": i, "t": time.time()})
    return i


def test_a_takeover_while_tasks_run_refuses_their_commits(lock_root, monkeypatch):
    from distributed import Client, LocalCluster

    from sm1km.runtime.runner import run_tasks

    root, _, direct = lock_root
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    n = 16
    first = StoreLock(root, direct, stage="downscale", ttl_s=30, heartbeat_s=0.2, interrupt_on_loss=False).acquire()
    done, t_takeover, second = [], None, None
    try:
        with LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None) as cluster, \
                Client(cluster) as client:
            task = functools.partial(_probe_task, root=root, so=direct)
            with pytest.raises(FencedError) as err:
                for i in run_tasks(client, task, range(n), window=4, name="probe"):
                    done.append(i)
                    if len(done) == 2:   # another run breaks the lock and takes the store
                        force_unlock(root, direct)
                        second = StoreLock(root, direct, stage="fuse", ttl_s=30, heartbeat_s=10).acquire()
                        t_takeover = time.time()
            assert "was refused" in str(err.value)
    finally:
        first.release()
        if second is not None:
            second.release()
    assert t_takeover is not None and len(done) < n
    marks = [store.read_json(store.join(root, "_ledger", "probe.zarr", f"u{i:02d}.json"), direct)
             for i in range(n)]
    landed = [m for m in marks if m is not None]
    assert 2 <= len(landed) < n
    late = [m for m in landed if m["t"] > t_takeover]
    assert not late, f"commits after the takeover landed: {late}"


# ------------------------------------------------------------------------------------------------
# whole runs of `sm1km downscale`
# ------------------------------------------------------------------------------------------------
INPUTS = ("inputs/", "fused.zarr", "_ledger/inputs", "_ledger/fused.zarr")
MASTER = ("master.zarr", "_ledger/master.zarr")


@pytest.fixture(scope="module")
def slow(moto_server):
    """A second proxy between the first and moto that delays every write to the master and its
    ledger (≤ 0.5 s each), so that a downscale run lasts longer than a short lease."""
    p = FaultProxy(moto_server, record=True).start()
    yield p
    p.stop()


SLOW_WRITES = FaultPlan(fraction=1.0, kinds=("delay",), max_delay_s=0.5, paths=("/master.zarr/",), methods=("PUT",),
                        seed=7)


@pytest.fixture
def s3_world(moto_server, world, reference, base, proxy, slow):
    """The reference run's inputs and fused store in a fresh bucket; run.yaml files for a run
    through ``proxy`` → ``slow`` → moto (``faulty``) and straight to moto (``direct``)."""
    import s3fs

    proxy.configure(FaultPlan())
    slow.configure(SLOW_WRITES)
    bucket = f"fence-{uuid.uuid4().hex[:10]}"
    fs = s3fs.S3FileSystem(endpoint_url=moto_server, skip_instance_cache=True)
    fs.mkdir(bucket)
    root = f"s3://{bucket}/run"
    _, ref_tree = reference
    trees.put(root, {k: v for k, v in ref_tree.items() if k.startswith(INPUTS)}, {"endpoint_url": moto_server})
    proxy.backend = ("127.0.0.1", int(slow.url.rsplit(":", 1)[1]))   # the chain: proxy -> slow -> moto
    dest = base / "fencing" / bucket
    yield {"root": root, "so": {"endpoint_url": moto_server}, "reference": ref_tree, "fs": fs, "bucket": bucket,
           "faulty": FW.write_run_yaml(world, dest / "faulty", root=root, endpoint_url=proxy.url),
           "direct": FW.write_run_yaml(world, dest / "direct", root=root, endpoint_url=moto_server),
           "logs": dest}
    proxy.backend = ("127.0.0.1", int(moto_server.rsplit(":", 1)[1]))
    proxy.configure(FaultPlan())


def _downscale(name: str, run_yaml: Path, logs: Path, ttl_s: float = TTL_S) -> P.Proc:
    return P.sm1km(name, ["-v", "downscale", "--config", str(run_yaml)], logs,
                   env=FW.child_env(SM1KM_LOCK_TTL_S=str(ttl_s)))


def _marks(w) -> set[str]:
    w["fs"].invalidate_cache()
    path = f"{w['bucket']}/run/_ledger/master.zarr"
    names = {p.rsplit("/", 1)[1][:-5] for p in w["fs"].find(path) if p.endswith(".json")}
    return {n for n in names if n.startswith(("lat-", "lon-", "time-"))}   # region markers only


def _skipped(log: str) -> int:
    """Shards a downscale run found done (its log line)."""
    m = re.search(r"downscale: \d+ shards, (\d+) already done \(skipped\)", log)
    assert m, log[-3000:]
    return int(m.group(1))


def _assert_master_is_the_reference(w) -> None:
    got = FW.tree(w["root"], w["so"], prefixes=MASTER)
    want = {k: v for k, v in w["reference"].items() if k.startswith(MASTER)}
    assert len(got) == len(want) > FW.N_MASTER_SHARDS
    FW.assert_same_tree(want, got, FW.normalize_config_attrs, "master after the runs vs the reference")


def _writes_after(proxy_: FaultProxy, t: float) -> list:
    """Writes to the master or its ledger that reached the store after ``t`` (through ``proxy_``)."""
    return [r for r in proxy_.requests() if r[2] in ("PUT", "POST", "DELETE") and "master.zarr" in r[3]
            and r[0] > t and r[4] in (200, 204)]


@pytest.mark.slow
def test_downscale_completes_when_one_renewal_response_is_lost(s3_world, proxy, slow):
    w = s3_world
    proxy.reset_stats()
    slow.configure(FaultPlan())   # no delays needed: the run lasts several heartbeats anyway
    proxy.configure(FaultPlan(fraction=1.0, kinds=("drop_after",), paths=(LOCK_PATH,), methods=("PUT",),
                              skip_first=1, max_faults=1))
    run = _downscale("lost-response", w["faulty"], w["logs"])
    assert run.wait(300) == 0, run.tail()
    assert len(_faults(proxy, "drop_after")) == 1
    assert "answered 412 but the lock is still this run's" in run.tail(100_000)
    assert "lost its lock" not in run.tail(100_000)
    _assert_master_is_the_reference(w)


@pytest.mark.slow
def test_downscale_whose_renewals_are_denied_stops_itself_and_the_next_run_takes_over(s3_world, proxy, slow):
    w = s3_world
    slow.reset_stats()
    first = _downscale("denied", w["faulty"], w["logs"])
    try:   # once it has written a shard, every renewal (and the release) of its lock is refused
        P.poll_until(lambda: len(_marks(w)) >= 1, 300, 0.05, alive=first, what="the first shard of the holder")
        proxy.configure(FaultPlan(permanent="access_denied", paths=(LOCK_PATH,), methods=("PUT", "DELETE")))
        assert first.wait(300) == 2, first.tail()
    finally:
        first.kill()
    log1 = first.tail(100_000)
    assert "could not be renewed in time" in log1 and "self-fencing" in log1 and "Traceback" not in log1
    assert "lost its lock while writing" in log1.strip().splitlines()[-1]
    assert proxy.stats()["faults"].get("access_denied", 0) >= 1
    left = read_lock(w["root"], w["so"])   # its release was denied too: the lock stays until it expires
    assert left is not None and isinstance(left["generation"], int)
    marked_by_first = _marks(w)
    assert 1 <= len(marked_by_first) < FW.N_MASTER_SHARDS   # it stopped in the middle of the stage
    # no write of the first run reached the store after its lease ended (it stopped itself before)
    assert not _writes_after(slow, left["expires_unix"])
    # the second run takes over once the lease has expired, and writes the rest
    while time.time() <= left["expires_unix"]:
        time.sleep(0.05)
    second = _downscale("after-denied", w["direct"], w["logs"])
    assert second.wait(300) == 0, second.tail()
    log2 = second.tail(100_000)
    assert "taking over a stale run lock" in log2 and f"generation {left['generation']})" in log2
    took = re.search(r"run lock taken: .* generation (\d+),", log2)
    assert took and int(took.group(1)) > left["generation"]
    assert _skipped(log2) <= len(marked_by_first)   # what downscale counts as done (block deps) of those
    _assert_master_is_the_reference(w)


@pytest.mark.slow
def test_a_sigstopped_holder_is_taken_over_and_its_commits_refused_after_sigcont(s3_world, proxy, slow):
    w = s3_world
    slow.reset_stats()
    first = _downscale("stopped", w["faulty"], w["logs"])
    try:
        P.poll_until(lambda: len(_marks(w)) >= 1, 300, 0.05, alive=first, what="the first shard of the holder")
        first.kill(signal.SIGSTOP)
        t_stop = time.time()
        held = read_lock(w["root"], w["so"])
        while time.time() <= held["expires_unix"]:
            time.sleep(0.05)
        marked_at_stop = _marks(w)
        second = _downscale("takes-over", w["direct"], w["logs"])
        assert second.wait(300) == 0, second.tail()
        log2 = second.tail(100_000)
        assert "taking over a stale run lock" in log2 and "lease expired" in log2
        assert _skipped(log2) <= len(marked_at_stop)
        _assert_master_is_the_reference(w)
        before = FW.tree(w["root"], w["so"], prefixes=MASTER)
        t_cont = time.time()
        first.kill(signal.SIGCONT)
        assert first.wait(120) == 2, first.tail()
    finally:
        first.kill(signal.SIGCONT)
        first.kill()
    log1 = first.tail(100_000)
    assert "Traceback" not in log1
    assert "lost its lock" in log1 or "was refused" in log1, log1[-3000:]
    # after SIGCONT nothing new of the first run lands: at most a retry of a write that was in flight
    # (past its check) when the process was stopped — its client's timeout ran out during the stop —
    # with the same bytes, so the store is unchanged
    late = _writes_after(slow, t_cont)
    in_flight = {r[3] for r in slow.requests() if r[0] < t_stop < r[1] + 1.0 and r[2] == "PUT"}
    assert {r[3] for r in late} <= in_flight, late
    assert len({r[3] for r in late}) <= 1, late
    assert FW.tree(w["root"], w["so"], prefixes=MASTER) == before
    _assert_master_is_the_reference(w)


def test_generation_grows_at_every_acquisition_and_takeover(tmp_path, caplog):
    root = str(tmp_path / "store")
    gens = []
    for _ in range(3):
        with StoreLock(root) as lk:
            gens.append(lk.generation)
            assert read_lock(root)["generation"] == lk.generation
    assert gens == sorted(set(gens))
    assert not list((tmp_path / "store" / "_locks").iterdir())   # nothing outlives a release
    # a lock from the future (another host's clock ahead): the takeover still goes above it
    ahead = int(time.time() * 1000) + 10**9
    path = tmp_path / "store" / "_locks" / "run.lock"
    path.write_text(json.dumps({"owner": {"host": "node-9", "pid": 1, "uuid": "e" * 32}, "generation": ahead,
                                "expires_unix": time.time() - 1, "expires": "2020-01-01T00:00:00Z"}))
    with caplog.at_level("WARNING", logger="sm1km.storage.lock"), StoreLock(root) as lk:
        assert lk.generation == ahead + 1
    assert "taking over a stale run lock" in caplog.text
