"""One writer per store: the run lock (``sm1km.storage.lock``) on a local path and on S3 (moto server).

A second run is refused with a message naming the holder; a crashed holder's lock is taken over
(lease expiry, or at once when its pid is gone on this host); SIGTERM releases it; a run whose
lock is broken under it stops; two runs breaking one stale lock cannot both win; the real CLI
refuses and ``--force-unlock`` recovers.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import bad_inputs as B
from sm1km import Pipeline
from sm1km.cli import main
from sm1km.config import RunConfig
from sm1km.errors import StoreError
from sm1km.storage import store
from sm1km.storage.lock import StoreLock, force_unlock, lock_url, read_lock, run_lock


def _cfg(root: str, so: dict) -> RunConfig:
    store_cfg = {"root": root, **({"endpoint_url": so["endpoint_url"]} if so else {})}
    return RunConfig.from_dict({"region": {"west": 0, "south": 45, "east": 1, "north": 46},
                                "period": {"start": "2020-04-01", "end": "2020-04-02"}, "store": store_cfg,
                                "cluster": {"kind": "synchronous"}})


def _plant(root: str, so: dict, **fields) -> None:
    """Write a lock as another run would have left it."""
    now = time.time()
    info = {"sm1km_lock": 1, "owner": {"host": "node-7", "pid": 4242, "user": "batch", "uuid": "f" * 32},
            "stage": "downscale", "acquired": "2020-01-01T00:00:00Z", "heartbeat": "2020-01-01T00:00:00Z",
            "expires": "2099-01-01T00:00:00Z", "expires_unix": now + 3600, "ttl_s": 300}
    for k, v in fields.items():
        if k in ("host", "pid", "uuid"):
            info["owner"][k] = v
        else:
            info[k] = v
    fs, path = store.filesystem(lock_url(root), so)
    if not store.is_remote(root):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    fs.pipe_file(path, json.dumps(info).encode())


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_second_writer_is_refused_until_the_first_releases(store_root):
    root, so = store_root
    with StoreLock(root, so, stage="ingest", heartbeat_s=0.1) as first:
        held = read_lock(root, so)
        assert held["owner"]["uuid"] == first.token and held["stage"] == "ingest"
        assert held["owner"]["host"] == socket.gethostname() and held["owner"]["pid"] == os.getpid()
        with pytest.raises(StoreError) as err:
            StoreLock(root, so, stage="fuse").acquire()
        msg = str(err.value)
        assert "being written by another run" in msg and "stage 'ingest'" in msg and f"pid {os.getpid()}" in msg
        assert "--force-unlock" in msg and lock_url(root) in msg
        time.sleep(0.5)  # a few heartbeats
        renewed = read_lock(root, so)
        assert renewed["expires_unix"] > held["expires_unix"] and renewed["owner"]["uuid"] == first.token
    assert read_lock(root, so) is None
    with StoreLock(root, so, stage="fuse"):
        assert read_lock(root, so)["stage"] == "fuse"
    assert store.checksum_tree(store.join(root, "_locks"), so) == {}


def test_expired_lease_is_taken_over(store_root, caplog):
    root, so = store_root
    _plant(root, so, expires_unix=time.time() - 5, expires="2020-01-01T00:05:00Z")
    with caplog.at_level("WARNING", logger="sm1km.storage.lock"):
        with StoreLock(root, so, stage="fuse") as lk:
            assert read_lock(root, so)["owner"]["uuid"] == lk.token
    assert "stale run lock" in caplog.text and "lease expired" in caplog.text and "node-7" in caplog.text


def test_live_foreign_lock_is_respected_and_force_unlock_breaks_it(store_root):
    root, so = store_root
    _plant(root, so)
    with pytest.raises(StoreError, match="host node-7 .pid 4242"):
        StoreLock(root, so).acquire()
    with StoreLock(root, so, stage="fuse").acquire(force=True) as lk:
        assert read_lock(root, so)["owner"]["uuid"] == lk.token
    _plant(root, so)
    assert force_unlock(root, so)["owner"]["host"] == "node-7"
    assert read_lock(root, so) is None


def test_lock_of_a_dead_process_on_this_host_is_stale_at_once(tmp_path, caplog):
    root = str(tmp_path / "store")
    _plant(root, {}, host=socket.gethostname(), pid=_dead_pid())
    with caplog.at_level("WARNING", logger="sm1km.storage.lock"):
        with StoreLock(root, stage="fuse"):
            pass
    assert "no longer exists on this host" in caplog.text


def test_unreadable_lock_counts_as_held_until_it_is_older_than_the_lease(tmp_path):
    root = str(tmp_path / "store")
    path = Path(store.filesystem(lock_url(root))[1])
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x00garbage")
    with pytest.raises(StoreError, match="unreadable lock"):
        StoreLock(root).acquire()
    old = time.time() - 1000
    os.utime(path, (old, old))
    with StoreLock(root, ttl_s=60):
        pass


def test_lock_on_a_filesystem_without_atomic_create(caplog):
    """Other fsspec filesystems (here ``memory://``): best effort, but the same protocol."""
    import uuid

    root = f"memory://sm1km-{uuid.uuid4().hex[:8]}/run"
    with caplog.at_level("WARNING"):
        with StoreLock(root, stage="ingest", heartbeat_s=0.05) as lk:
            assert "no atomic create" in caplog.text
            with pytest.raises(StoreError, match="being written by another run"):
                StoreLock(root, stage="fuse").acquire()
            first = read_lock(root)["heartbeat_unix"]
            deadline = time.time() + 10
            while read_lock(root)["heartbeat_unix"] == first and time.time() < deadline:
                time.sleep(0.05)
            assert read_lock(root)["heartbeat_unix"] > first and read_lock(root)["owner"]["uuid"] == lk.token
    assert read_lock(root) is None
    _plant(root, {})
    assert force_unlock(root)["owner"]["uuid"] == "f" * 32 and read_lock(root) is None


@pytest.mark.parametrize("n", [6])
def test_racing_takeovers_of_one_stale_lock_have_one_winner(store_root, n):
    root, so = store_root
    _plant(root, so, expires_unix=time.time() - 5)
    won, refused = [], []
    barrier = threading.Barrier(n)

    def contender():
        lk = StoreLock(root, so, stage="race", heartbeat_s=30, interrupt_on_loss=False)
        barrier.wait()
        try:
            lk.acquire()
            won.append(lk)
        except StoreError:
            refused.append(lk)

    threads = [threading.Thread(target=contender) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(won) == 1 and len(refused) == n - 1
    assert read_lock(root, so)["owner"]["uuid"] == won[0].token
    won[0].release()


def test_run_lock_is_reentrant_and_pipeline_takes_it(tmp_path):
    cfg = _cfg(str(tmp_path / "store"), {})
    with run_lock(cfg, "run") as outer:
        with run_lock(cfg, "fuse") as inner:
            assert inner is outer
        assert read_lock(cfg.store.root)["owner"]["uuid"] == outer.token
    assert read_lock(cfg.store.root) is None
    _plant(cfg.store.root, {})
    with pytest.raises(StoreError, match="being written by another run"):
        Pipeline(cfg).run(stages=("fuse",))


# ------------------------------------------------------------------------------------------------
# other processes
# ------------------------------------------------------------------------------------------------
HOLDER = textwrap.dedent("""
    import sys, time
    from sm1km.config import RunConfig
    from sm1km.errors import Sm1kmError
    from sm1km.storage.lock import run_lock
    cfg = RunConfig.from_yaml(sys.argv[1])
    try:
        with run_lock(cfg, "ingest"):
            print("locked", flush=True)
            for _ in range(600):
                time.sleep(0.1)
    except Sm1kmError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        sys.exit(2)
""")


def _holder(run_yaml: Path, sigint: str = "default", **env) -> subprocess.Popen:
    """A process holding the run lock; ``sigint="ignore"``: started with SIGINT ignored, as a job
    started with ``&`` from a script is."""
    pre = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if sigint == "ignore" else \
        (lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_yaml)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env={**os.environ, **env}, preexec_fn=pre)
    assert p.stdout.readline().strip() == "locked", p.stderr.read()
    return p


def _cli(capsys, caplog, *args: str) -> tuple[int, str, str]:
    """The real CLI in this process: (exit code, stderr, log text)."""
    capsys.readouterr()
    caplog.clear()
    with caplog.at_level("INFO"):
        rc = main(list(args))
    return rc, capsys.readouterr().err, caplog.text


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny world with ingested inputs (fuse is the command under test)."""
    mp = pytest.MonkeyPatch()
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        mp.delenv(k, raising=False)
    try:
        w = B.write_tiny_world(tmp_path_factory.mktemp("lock") / "world")
        assert main(["ingest", "--config", str(w.run_yaml)]) == 0
    finally:
        mp.undo()
    return Path(w.run_yaml)


def test_cli_refuses_a_second_writer_then_takes_over_from_a_killed_one(world, capsys, caplog):
    """While another process holds the store, `sm1km fuse` is refused (exit 2, one paragraph naming
    the holder, store untouched); after SIGKILL of the holder its lock stays, and is stale at once
    on this host."""
    run_yaml = str(world)
    holder = _holder(world)
    try:
        before = store.checksum_tree(str(world.parent / "store"))
        rc, err, _ = _cli(capsys, caplog, "fuse", "--config", run_yaml)
        assert rc == 2 and "Traceback" not in err, err
        line = next(ln for ln in err.splitlines() if ln.startswith("sm1km fuse: error:"))
        assert "being written by another run" in line and f"pid {holder.pid}" in line and "stage 'ingest'" in line
        assert "Fix:" in line and "--force-unlock" in line
        assert store.checksum_tree(str(world.parent / "store")) == before
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert read_lock(str(world.parent / "store"))["owner"]["pid"] == holder.pid  # a crash leaves it
    rc, err, logs = _cli(capsys, caplog, "fuse", "--config", run_yaml)
    assert rc == 0, err
    assert "taking over a stale run lock" in logs and "no longer exists on this host" in logs
    assert read_lock(str(world.parent / "store")) is None


def test_sigterm_releases_the_lock(world):
    holder = _holder(world)
    holder.send_signal(signal.SIGTERM)
    assert holder.wait(30) == 128 + signal.SIGTERM
    assert read_lock(str(world.parent / "store")) is None


@pytest.mark.parametrize("sigint", ["default", "ignore"])
def test_a_run_whose_lock_is_broken_stops_with_a_clear_error(world, sigint):
    holder = _holder(world, sigint=sigint, SM1KM_LOCK_HEARTBEAT_S="0.1")
    try:
        force_unlock(str(world.parent / "store"))
        out, err = holder.communicate(timeout=30)
    finally:
        holder.kill()
    assert holder.returncode == 2, err
    assert "lost its lock while writing" in err and "Traceback" not in err


def test_force_unlock_flag_recovers_from_a_live_looking_lock(world, capsys, caplog):
    root = str(world.parent / "store")
    _plant(root, {})
    rc, err, _ = _cli(capsys, caplog, "fuse", "--config", str(world))
    assert rc == 2 and "host node-7" in err
    rc, err, logs = _cli(capsys, caplog, "fuse", "--config", str(world), "--force-unlock")
    assert rc == 0, err
    assert "--force-unlock: breaking the lock" in logs and "node-7" in logs
    assert read_lock(root) is None
