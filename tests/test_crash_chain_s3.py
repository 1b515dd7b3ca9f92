"""Crash and resume on S3 with a real cluster: ``sm1km run`` (to day 8) and ``sm1km update`` (to day 12)
drivers SIGKILLed at many seeded points spread over every stage, each killed driver resumed by the next,
while one ``dask scheduler`` and two ``dask worker`` processes (started once) outlive them all.

The chain: a driver is started, killed at its seeded point, the next driver resumes and is killed
at the next point, ... until the command's last driver runs to the end; then the next command
(``update --until`` four more days). The cost is about one run plus a driver start per kill.

A kill point is (command, stage, k): SIGKILL (the driver's whole process group) once the driver has
started ``stage`` (its ``stage X: start`` log line) and made ``k`` successful writes to the store
since — progress on the wire, counted by a recording proxy (``tests/faultproxy.py``, no faults) in
front of moto through which the driver *and the workers* talk to S3, not wall time. ``k`` is
seeded, up to the stage's share of the writes of the uninterrupted reference run; when a driver
leaves the stage before its ``k``-th write it is killed at the start of the next stage (counted
there). The run lock of a killed driver is taken over at once by the next one (its pid is gone on
this host, ``storage/lock``); before each resume the test waits until the scheduler holds no task
of the killed driver (orphaned tasks of a dead client finish or are released first).

All along the chain (not in the reference) the proxies also damage response bodies of the store's
objects, at seeded rates on every stage: truncated bodies (fewer bytes than ``Content-Length``,
then the connection closes) on whole and ranged GETs, and one flipped bit on whole-object GETs
(S3 returns the object's CRC32 with those; botocore checks it and ``storage.store`` makes s3fs
retry a mismatch). Both must be retried transparently: the result below is unchanged.

Checked at the end:

* every object under store.root (inputs, fused, params, model, master, monthly, exports, report,
  catalog, ledger; not ``_locks/`` and ``_staging/``, see ``sm1km.testing.trees.NOT_STORES``) is
  byte-identical to the uninterrupted reference run of the same two commands on the same
  root and config (the reference's objects are snapshotted, then removed);
* no finished unit is redone: within a command, no ledger unit marker (region markers, ingest
  indexes) is written twice, no chunk object of a region whose marker a killed driver had
  written is written again, and no export file written whole by a killed driver is written
  again (a resumed export adopts it by its digest) — from the proxy's record of every request;
* the workers are the same two processes throughout (pids of the nannies and of the worker
  processes, and their addresses at the scheduler);
* truncated and corrupted bodies struck every stage (the counts per stage are logged).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import random
import re
import sys
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

import faults_world as FW
import proc_helpers as P
from faultproxy import FaultPlan, FaultProxy
from sm1km.pipeline import DEFAULT_STAGES, UPDATE_STAGES
from sm1km.testing import trees

#: the reference (run + update) and 24 drivers: 490-1020 s on a 2-core machine shared with other jobs
pytestmark = [pytest.mark.slow, pytest.mark.network, pytest.mark.timeout(1800)]

SEED = 20261204
DRIVER = str(Path(__file__).resolve().parent / "tiny_driver.py")
RUN_TIMEOUT_S = 300
#: ``run`` to day 8 of the 12-day world, then ``update --until`` day 12
RUN_DAYS, UPDATE_DAYS = 8, (12,)
#: kills per (command, stage): 20 in all, in every stage. Most of the downstream ones are in
#: ``update`` (it never trains: a resumed ``run`` retrains, ~15 s here, before it gets back there)
KILLS: dict[str, dict[str, int]] = {
    "run": {"ingest": 1, "fuse": 1, "train": 1, "downscale": 1, "aggregate": 1, "export": 1, "validate": 1,
            "catalog": 1},
    "update-12": {"ingest": 2, "fuse": 2, "downscale": 3, "aggregate": 2, "export": 2, "catalog": 1},
}
STAGE_START = re.compile(r"stage (\w+): start")
UNIT_MARKER = re.compile(r"^_ledger/(?P<store>.+\.zarr)/(?P<unit>(lat|lon|time)-\d+-\d+(_(lat|lon|time)-\d+-\d+)*"
                         r"|ingest-index)\.json$")
EXPORT_FILE = re.compile(r"^exports/.+\.(tif|h5|nc)$")


def _commands(run_yaml: Path, start: dt.date) -> dict[str, list[str]]:
    out = {"run": ["-v", "run", "--config", str(run_yaml)]}
    for day in UPDATE_DAYS:
        until = start + dt.timedelta(days=day - 1)
        out[f"update-{day}"] = ["-v", "update", "--config", str(run_yaml), "--until", until.isoformat()]
    return out


@dataclass
class Driver:
    """One driver process of a command and what the proxy saw while it lived."""

    command: str
    name: str
    t_start: float
    rc: int | None = None
    killed_in: str | None = None        # the stage it was running when killed
    target: tuple[str, int] | None = None
    writes: list = field(default_factory=list)     # (key, method, t) of its successful writes
    stage_writes: Counter = field(default_factory=Counter)
    stages: list = field(default_factory=list)     # (stage, time its start was seen)
    t_end: float = 0.0
    log: str = ""

    def stage_at(self, t: float) -> str | None:
        """The stage this driver was in at time ``t`` (None: before its first stage or after it ended)."""
        if not self.t_start <= t <= self.t_end:
            return None
        now = [name for name, t0 in self.stages if t0 <= t]
        return now[-1] if now else None


class Chain:
    """Starts drivers, watches their log and the proxy's record, kills them at their points."""

    def __init__(self, proxy: FaultProxy, prefix: str, log_dir: Path, env: dict):
        self.proxy, self.prefix, self.log_dir, self.env = proxy, prefix, log_dir, env
        self.drivers: list[Driver] = []
        self._seen = 0
        self._n = 0

    def _new_writes(self) -> list[tuple[str, str, float]]:
        new = self.proxy.requests(self._seen)
        self._seen += len(new)
        out = []
        for t0, _t1, method, path, status, _kind in new:
            path = path.split("?", 1)[0]
            if method in ("PUT", "POST", "DELETE") and 200 <= status < 300 and path.startswith(self.prefix):
                key = path[len(self.prefix):]
                if not key.startswith("_locks/"):
                    out.append((key, method, t0))
        return out

    def drive(self, command: str, args: list[str], target: tuple[str, int] | None) -> Driver:
        """Run one driver; SIGKILL it at ``target`` (stage, k) or let it finish (``target`` None)."""
        self._new_writes()   # what came before belongs to earlier drivers
        self._n += 1
        d = Driver(command, f"{self._n:02d}-{command}", time.time(), target=target)
        self.drivers.append(d)
        proc = P.start(d.name, [sys.executable, DRIVER, *args], self.log_dir, self.env)
        order = list(DEFAULT_STAGES if command == "run" else UPDATE_STAGES)
        stage = None
        try:
            t_end = time.monotonic() + RUN_TIMEOUT_S
            while True:
                for w in self._new_writes():
                    d.writes.append(w)
                    if stage is not None:
                        d.stage_writes[stage] += 1
                starts = STAGE_START.findall(proc.tail(10**6))
                if len(starts) > len(d.stages):
                    d.stages += [(name, time.time()) for name in starts[len(d.stages):]]
                    stage = starts[-1]
                if target is not None and stage is not None:
                    want, k = target
                    if order.index(stage) > order.index(want) or (stage == want and d.stage_writes[stage] >= k):
                        proc.kill()
                        d.rc = proc.popen.wait(30)
                        d.killed_in = stage
                        break
                if not proc.alive():
                    d.rc = proc.popen.wait(30)
                    break
                if time.monotonic() > t_end:
                    raise AssertionError(f"{d.name} did not finish in {RUN_TIMEOUT_S} s:\n{proc.tail()}")
                time.sleep(0.005)
        finally:
            proc.kill()
        time.sleep(0.05)
        for w in self._new_writes():   # the last responses of its in-flight requests
            d.writes.append(w)
        d.log = proc.tail(10**6)
        d.t_end = time.time()
        return d


def _scheduler_idle(address: str, timeout: float = 60) -> None:
    """Wait until the scheduler holds no task (a killed driver's orphaned tasks are done or released)."""
    from distributed import Client

    with Client(address, timeout=30) as c:
        P.poll_until(lambda: c.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)) == 0,
                     timeout, 0.05, what="an idle scheduler")


def _worker_identity(address: str) -> dict[str, int]:
    """{worker address: pid of the worker process} as the scheduler sees them."""
    import os

    from distributed import Client

    with Client(address, timeout=30) as c:
        return dict(c.run(os.getpid))


def _unit_chunks(ref_tree: dict[str, bytes], store_name: str, unit: str) -> set[str]:
    """Chunk (shard) objects of ``store_name`` that lie inside region marker ``unit`` (every array
    whose dimensions are the marker's; chunk grid from the reference's ``zarr.json``). Coordinates
    are not a unit's: a resumed run that grows a store writes its new time values again."""
    region = {d: (int(a), int(b)) for d, a, b in re.findall(r"(lat|lon|time)-(\d+)-(\d+)", unit)}
    out: set[str] = set()
    for key, data in ref_tree.items():
        if not (key.startswith(store_name + "/") and key.endswith("/zarr.json")) or key.count("/") != 2:
            continue
        meta = json.loads(data)
        dims = meta.get("dimension_names") or []
        if meta.get("node_type") != "array" or set(dims) != set(region):   # data arrays, not coordinates
            continue
        chunk = meta["chunk_grid"]["configuration"]["chunk_shape"]
        ranges = [range(region[d][0] // c, -(-region[d][1] // c)) for d, c in zip(dims, chunk, strict=True)]
        var = key.split("/")[1]
        idx: list[tuple[int, ...]] = [()]
        for r in ranges:
            idx = [i + (j,) for i in idx for j in r]
        out |= {f"{store_name}/{var}/c/" + "/".join(map(str, i)) for i in idx}
    return out


def _redone(drivers: list[Driver], ref_tree: dict[str, bytes]) -> list[str]:
    """Finished work written again by a later driver of the same command (see the module doc)."""
    problems = []
    by_command: dict[str, list[Driver]] = defaultdict(list)
    for d in drivers:
        by_command[d.command].append(d)
    for command, ds in by_command.items():
        marker_puts = Counter(k for d in ds for k, m, _ in d.writes if m == "PUT" and UNIT_MARKER.match(k))
        problems += [f"{command}: unit marker {k} written {n} times" for k, n in marker_puts.items() if n > 1]
        for i, d in enumerate(ds[1:], start=1):
            done_markers = {k for e in ds[:i] for k, m, _ in e.writes if m == "PUT" and UNIT_MARKER.match(k)}
            done_files = {k for e in ds[:i] for k, m, _ in e.writes if m == "PUT" and EXPORT_FILE.match(k)}
            done_chunks: set[str] = set()
            for k in done_markers:
                m = UNIT_MARKER.match(k)
                if m and m["unit"] != "ingest-index":
                    done_chunks |= _unit_chunks(ref_tree, m["store"], m["unit"])
            for k, m, _ in d.writes:
                if m != "PUT":
                    continue
                if k in done_chunks:
                    problems.append(f"{d.name}: chunk {k} of a finished unit written again")
                if k in done_files:
                    problems.append(f"{d.name}: export file {k} written whole before is written again")
    return problems


@pytest.fixture(scope="module")
def proxies(moto_server):
    """(front, back): drivers and workers talk to ``front`` (records every request; truncates bodies
    when told), which talks to ``back`` (corrupts bodies when told), which talks to moto."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    back = FaultProxy(moto_server, record=True).start()
    front = FaultProxy(back.url, record=True).start()
    yield front, back
    front.stop()
    back.stop()


#: body faults during the chain, on GETs of the store's objects (not of ``_locks/``, whose faults
#: ``test_lock_fencing`` covers, and not of listings, which carry no checksum): truncated bodies on
#: whole and ranged GETs, one flipped bit on whole-object GETs (the ones S3 returns a CRC32 for)
BODY_FRACTION = 0.02
OBJECT_PREFIXES = ("inputs/", "fused.zarr/", "fused_params.zarr/", "model/", "master.zarr/", "monthly.zarr/",
                   "exports/", "report/", "catalog/", "_ledger/", "_staging/")


def _body_faults(bucket: str) -> tuple[FaultPlan, FaultPlan]:
    paths = tuple(f"/{bucket}/run/{p}" for p in OBJECT_PREFIXES)
    return (FaultPlan(fraction=BODY_FRACTION, kinds=("truncate",), methods=("GET",), paths=paths, seed=SEED),
            FaultPlan(fraction=BODY_FRACTION, kinds=("corrupt",), methods=("GET",), paths=paths, ranged=False,
                      seed=SEED + 1))


def _faults_by_stage(drivers: list[Driver], requests: list, kind: str) -> Counter:
    out: Counter = Counter()
    for t0, _t1, _m, _p, _status, k in requests:
        if k == kind:
            stage = next((st for d in drivers if (st := d.stage_at(t0))), None)
            out[stage or "(between stages)"] += 1
    return out


def _write_config(world, dest: Path, root: str, endpoint: str) -> tuple[Path, dt.date]:
    path = FW.write_run_yaml(world, dest, root=root, endpoint_url=endpoint, cluster={"kind": "address"})
    data = yaml.safe_load(path.read_text())
    start = dt.date.fromisoformat(str(data["period"]["start"]))
    first_end = (start + dt.timedelta(days=RUN_DAYS - 1)).isoformat()
    data["period"]["end"] = first_end
    data["fusion"]["reference_period"] = {"start": start.isoformat(), "end": first_end}
    data["model"]["path"] = None          # train into the store: it is one of the stages killed
    data["model"]["min_station_days"] = 4
    data["model"]["cv_folds"] = 2
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path, start


def test_a_chain_of_killed_drivers_on_s3_with_long_lived_workers(world, moto_server, proxies, tmp_path):
    import s3fs

    front, back = proxies
    fs = s3fs.S3FileSystem(endpoint_url=moto_server, skip_instance_cache=True)
    bucket = f"chain-{uuid.uuid4().hex[:10]}"
    fs.mkdir(bucket)
    root = f"s3://{bucket}/run"
    direct = {"endpoint_url": moto_server}
    run_yaml, start = _write_config(world, tmp_path / "job", root, front.url)
    commands = _commands(run_yaml, start)
    rng = random.Random(SEED)
    t_test = time.monotonic()
    problems: list[str] = []

    with P.dask_deployment(tmp_path / "cluster", n_workers=2) as dep:
        env = FW.child_env(DASK_SCHEDULER_ADDRESS=dep.address)
        chain = Chain(front, f"/{bucket}/run/", tmp_path / "drivers", env)
        workers_before = _worker_identity(dep.address)
        proc_pids = {n: p.pid for n, p in dep.workers.items()}

        # the uninterrupted reference: the same commands, config and root, on the same cluster, no faults
        reference: dict[str, Driver] = {}
        for command, args in commands.items():
            reference[command] = d = chain.drive(command, args, None)
            assert d.rc == 0, d.log[-4000:]
        ref_tree = trees.snapshot(root, direct, exclude=trees.NOT_STORES)
        assert len(ref_tree) > 300
        assert not _redone(list(reference.values()), ref_tree), _redone(list(reference.values()), ref_tree)
        fs.rm(f"{bucket}/run", recursive=True)
        t_ref = time.monotonic() - t_test

        # the chain, with truncated and corrupted bodies all along: every planned kill, then the
        # command's last driver runs to its end
        chain.drivers.clear()
        chain._seen = 0
        front.reset_stats()
        back.reset_stats()
        truncate, corrupt = _body_faults(bucket)
        front.configure(truncate)
        back.configure(corrupt)
        try:
            for command, args in commands.items():
                share = reference[command].stage_writes
                for stage, n in KILLS[command].items():
                    for _ in range(n):
                        k = rng.randint(0, max(0, share[stage] // n - 1))
                        d = chain.drive(command, args, (stage, k))
                        if d.rc == 0:
                            break   # it finished before its point (the last stage wrote less than k)
                        assert d.rc == -9, f"{d.name} ended with {d.rc} before its point {stage}/{k}:\n{d.log[-4000:]}"
                        _scheduler_idle(dep.address)
                    if d.rc == 0:
                        break
                if d.rc != 0:
                    d = chain.drive(command, args, None)
                assert d.rc == 0, d.log[-4000:]
        finally:
            front.configure(FaultPlan())
            back.configure(FaultPlan())
        workers_after = _worker_identity(dep.address)
        if not all(p.alive() for p in dep.procs) or {n: p.pid for n, p in dep.workers.items()} != proc_pids:
            problems.append("a scheduler or worker process did not survive the chain")

    got = trees.snapshot(root, direct, exclude=trees.NOT_STORES)
    kills = [d for d in chain.drivers if d.killed_in]
    where = Counter(f"{d.command}/{d.killed_in}" for d in kills)
    truncated = _faults_by_stage(chain.drivers, front.requests(), "truncate")
    corrupted = _faults_by_stage(chain.drivers, back.requests(), "corrupt")
    log = logging.getLogger(__name__)
    log.warning("crash chain: %d kills %s; reference %.0f s, whole test %.0f s", len(kills), dict(where), t_ref,
                time.monotonic() - t_test)
    log.warning("body faults retried: truncated %s, corrupted %s; GETs %s (front), %s (back)", dict(truncated),
                dict(corrupted), front.stats()["gets"], back.stats()["gets"])

    # the same two worker processes served every driver
    if workers_after != workers_before or len(workers_before) != 2:
        problems.append(f"workers changed: {workers_before} -> {workers_after}")
    # at least 20 kills, in every stage of ``run`` and of ``update``
    if len(kills) < 20 or {d.killed_in for d in kills if d.command == "run"} < set(KILLS["run"]) or \
            {d.killed_in for d in kills if d.command == "update-12"} < set(KILLS["update-12"]):
        problems.append(f"kill points: {dict(where)}")
    # truncated and corrupted bodies struck every stage (and were retried: the runs completed)
    for name, seen in (("truncated", truncated), ("corrupted", corrupted)):
        missing = [st for st in DEFAULT_STAGES if not seen.get(st)]
        if missing:
            problems.append(f"no {name} body in {missing}: {dict(seen)}")
    differ = trees.diff(ref_tree, got)
    problems += differ
    problems += _redone(chain.drivers, ref_tree)
    if problems:
        dump = tmp_path / "differences"
        dump.mkdir()
        for line in differ:
            key = line.split(": ", 1)[1]
            for tag, tree_ in (("reference", ref_tree), ("chain", got)):
                if key in tree_:
                    (dump / f"{key.replace('/', '__')}.{tag}").write_bytes(tree_[key])
        (tmp_path / "problems.txt").write_text("\n".join(problems))
    assert not problems, f"{len(problems)} problem(s) (all in {tmp_path / 'problems.txt'}):\n" + "\n".join(problems[:40])
