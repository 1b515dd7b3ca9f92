"""Subprocess helpers for the deployment-like tests: ``dask scheduler`` / ``dask worker`` / ``sm1km``
as separate OS processes on 127.0.0.1 (like pods), each in its own process group, always bounded
in time and always killed in the end (the whole group: a worker's nanny and its worker process).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import faults_world as FW

#: seconds for a process to start / a cluster to get ready on a slow, busy CI machine
START_TIMEOUT_S = 120


@dataclass
class Proc:
    """A started subprocess with its log file (stdout and stderr together)."""

    name: str
    popen: subprocess.Popen
    log: Path
    started: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, n: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group (the process and everything it started)."""
        kill_group(self.popen, sig)

    def wait(self, timeout: float) -> int:
        """Exit code; on timeout the group is killed and AssertionError raised with the log tail."""
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            self.popen.wait(timeout=30)
            raise AssertionError(f"{self.name} did not finish within {timeout:.0f} s; log tail:\n{self.tail()}") from None


def kill_group(popen: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(popen.pid, sig)   # start_new_session=True: its pgid is its pid
    except (ProcessLookupError, PermissionError):
        pass


def start(name: str, argv: Sequence[str], log_dir: Path, env: dict | None = None, cwd: Path | None = None) -> Proc:
    """Start ``argv`` in its own session/process group, stdout+stderr to ``log_dir/<name>.log``."""
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}.log"
    fh = open(log, "wb")
    try:
        p = subprocess.Popen(list(argv), stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             env=env if env is not None else FW.child_env(), cwd=cwd, start_new_session=True)
    finally:
        fh.close()
    return Proc(name, p, log)


def sm1km(name: str, args: Sequence[str], log_dir: Path, env: dict | None = None) -> Proc:
    """``sm1km ARGS`` as a subprocess (the job runner)."""
    return start(name, [sys.executable, "-m", "sm1km.cli", *args], log_dir, env)


def poll_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.02,
               alive: Proc | None = None, what: str = "condition") -> None:
    """Wait until ``predicate()``; AssertionError after ``timeout`` s or if ``alive`` exits first."""
    t_end = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if alive is not None and not alive.alive():
            raise AssertionError(f"{alive.name} exited (code {alive.popen.returncode}) before {what}; "
                                 f"log tail:\n{alive.tail()}")
        if time.monotonic() > t_end:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


# --------------------------------------------------------------------------------------------
# a dask cluster of separate processes
# --------------------------------------------------------------------------------------------
def start_scheduler(log_dir: Path, env: dict | None = None) -> tuple[Proc, str]:
    """``dask scheduler`` on 127.0.0.1 (random port, no dashboard); returns (proc, tcp address)."""
    sched_file = Path(log_dir) / "scheduler.json"
    sched_file.unlink(missing_ok=True)
    proc = start("scheduler", [sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1", "--port", "0",
                               "--no-dashboard", "--scheduler-file", str(sched_file)], log_dir, env)

    def ready() -> bool:
        try:
            return bool(json.loads(sched_file.read_text()).get("address"))
        except (OSError, ValueError):
            return False

    poll_until(ready, START_TIMEOUT_S, 0.1, alive=proc, what="the scheduler file")
    return proc, json.loads(sched_file.read_text())["address"]


def start_worker(name: str, address: str, log_dir: Path, env: dict | None = None) -> Proc:
    """``dask worker`` (a nanny + 1 worker process, 1 thread) on 127.0.0.1."""
    return start(name, [sys.executable, "-m", "dask", "worker", address, "--host", "127.0.0.1", "--nworkers", "1",
                        "--nthreads", "1", "--no-dashboard", "--name", name, "--memory-limit", "2GiB",
                        "--local-directory", str(Path(log_dir) / f"{name}-space")], log_dir, env)


def scheduler_workers(address: str) -> dict:
    """The scheduler's view of its workers: {worker address: info}."""
    from distributed import Client

    with Client(address, timeout=30) as c:
        return dict(c.scheduler_info(n_workers=-1)["workers"])


def wait_for_workers(address: str, n: int, timeout: float = START_TIMEOUT_S, procs: Sequence[Proc] = ()) -> dict:
    """Block until the scheduler has ``n`` workers; returns {worker name: worker address}."""
    from distributed import Client

    t_end = time.monotonic() + timeout
    with Client(address, timeout=30) as c:
        while True:
            workers = c.scheduler_info(n_workers=-1)["workers"]
            if len(workers) >= n:
                return {w["name"]: a for a, w in workers.items()}
            for p in procs:
                if not p.alive():
                    raise AssertionError(f"{p.name} exited before joining; log tail:\n{p.tail()}")
            if time.monotonic() > t_end:
                raise AssertionError(f"only {len(workers)} of {n} workers joined within {timeout:.0f} s")
            time.sleep(0.1)


@dataclass
class LocalDeployment:
    """Scheduler and workers as separate processes (the pods of a DaskCluster, minus Kubernetes)."""

    address: str
    scheduler: Proc
    workers: dict[str, Proc]
    procs: list[Proc]


@contextlib.contextmanager
def dask_deployment(log_dir: Path, n_workers: int = 2, env: dict | None = None):
    """Start ``dask scheduler`` + ``n_workers`` ``dask worker`` processes; kill them all at exit."""
    procs: list[Proc] = []
    try:
        sched, address = start_scheduler(log_dir, env)
        procs.append(sched)
        workers = {}
        for i in range(n_workers):
            w = start_worker(f"worker-{i}", address, log_dir, env)
            workers[w.name] = w
            procs.append(w)
        wait_for_workers(address, n_workers, procs=procs)
        yield LocalDeployment(address, sched, workers, procs)
    finally:
        stop_all(procs)


def stop_all(procs) -> None:
    """SIGTERM every process (last started first), then wait; SIGKILL one that does not exit in 10 s."""
    for p in reversed(procs):
        p.kill(signal.SIGTERM)
    for p in reversed(procs):
        try:
            p.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.popen.wait(timeout=10)
