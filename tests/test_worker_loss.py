"""Worker loss: one of two ``dask worker`` processes (nanny and worker: the whole pod) is killed
with SIGKILL in the middle of ``sm1km run`` on a cluster of separate processes; the scheduler
reschedules its tasks on the other worker, the job completes, and every store equals the local
single-process run (config-derived attributes normalised, as in test_topology.py).

The kill point is a seeded number of objects written under the store root (progress, not time).
"""

from __future__ import annotations

import random

import pytest

import faults_world as FW
import proc_helpers as P

pytestmark = [pytest.mark.slow, pytest.mark.network]

SEED = 20240613
RUN_TIMEOUT_S = 420


def test_a_worker_killed_mid_run_the_job_completes_identically(world, reference, tmp_path):
    ref_root, ref_tree = reference
    root = tmp_path / "job" / "store"
    run_yaml = FW.write_run_yaml(world, tmp_path / "job", root=str(root), cluster={"kind": "address"})
    total = FW.n_objects(ref_root)
    kill_at = random.Random(SEED).randint(40, total - 30)   # after ingest has begun, well before the end

    from distributed import Client

    with P.dask_deployment(tmp_path / "cluster", n_workers=2) as dep, Client(dep.address, timeout=30) as client:
        victim = dep.workers["worker-1"]
        victim_addr = next(a for a, w in client.scheduler_info(n_workers=-1)["workers"].items()
                           if w["name"] == victim.name)
        runner = P.sm1km("runner", ["-v", "run", "--config", str(run_yaml), "--stages", ",".join(FW.RUN_STAGES)],
                         tmp_path, env=FW.child_env(DASK_SCHEDULER_ADDRESS=dep.address))
        try:
            # the kill point: enough progress, and the victim is running a task right now
            busy: list = []

            def victim_busy() -> bool:
                if FW.n_objects(root) < kill_at:
                    return False
                busy[:] = client.processing(workers=[victim_addr]).get(victim_addr, [])
                return bool(busy)

            P.poll_until(victim_busy, RUN_TIMEOUT_S, 0.005, alive=runner,
                         what=f"{kill_at} objects under the store root and a task on {victim.name}")
            victim.kill()                       # SIGKILL to nanny + worker process: the pod is gone
            assert victim.popen.wait(30) == -9
            at_kill = FW.n_objects(root)
            assert runner.alive(), "the run ended before the worker was killed"
            assert runner.wait(RUN_TIMEOUT_S) == 0, runner.tail()
        finally:
            runner.kill()
        survivors = client.scheduler_info(n_workers=-1)["workers"]
    assert busy, "no task was running on the killed worker"
    assert [w["name"] for w in survivors.values()] == ["worker-0"]
    assert at_kill < total

    got = FW.tree(str(root))
    FW.assert_same_tree(ref_tree, got, FW.normalize_config_attrs,
                        f"run with a worker killed at {at_kill} of {total} objects vs the local run")
