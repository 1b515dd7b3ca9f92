"""The deployment, minus Kubernetes: every part a separate OS process on 127.0.0.1, like the pods of
a DaskJob — an S3 endpoint (moto server), ``dask scheduler``, two ``dask worker`` processes
(``--nworkers 1 --nthreads 1``) and the job runner ``sm1km run --config run.yaml`` with
``DASK_SCHEDULER_ADDRESS`` set, ``cluster.kind: address`` and the stores on ``s3://``. Inputs stay
local files (the workers run on this machine, as if the inputs were a mounted volume).

The result must equal the local single-process run (``cluster.kind: synchronous``, local store)
bit for bit: every chunk and shard object (the int16 bytes of the master included), every ledger
marker and ingest index, and every ``zarr.json`` — where only the config-derived attributes are
normalised (``faults_world.normalize_config_attrs``: the ``store`` and ``cluster`` sections of
``sm1km_config``, which name the S3 URL/endpoint and the cluster kind, and the sha256 of upstream
stores' ``zarr.json`` in ``input_files``, which differ because that metadata holds the config).
Decoded arrays are compared too.
"""

from __future__ import annotations

import uuid

import numpy as np
import pytest

import faults_world as FW
import proc_helpers as P

pytestmark = [pytest.mark.slow, pytest.mark.network]

RUN_TIMEOUT_S = 420


def test_separate_processes_on_s3_equal_the_local_single_process_run(world, reference, moto_server, tmp_path):
    import s3fs

    bucket = f"topology-{uuid.uuid4().hex[:10]}"
    s3fs.S3FileSystem(endpoint_url=moto_server, skip_instance_cache=True).mkdir(bucket)
    root = f"s3://{bucket}/run"
    run_yaml = FW.write_run_yaml(world, tmp_path / "job", root=root, endpoint_url=moto_server,
                                 cluster={"kind": "address"})

    with P.dask_deployment(tmp_path / "cluster", n_workers=2) as dep:
        runner = P.sm1km("runner", ["-v", "run", "--config", str(run_yaml), "--stages", ",".join(FW.RUN_STAGES)],
                         tmp_path, env=FW.child_env(DASK_SCHEDULER_ADDRESS=dep.address))
        try:
            assert runner.wait(RUN_TIMEOUT_S) == 0, runner.tail()
        finally:
            runner.kill()
        log = runner.tail(10**6)
        from distributed import Client

        with Client(dep.address, timeout=30) as c:
            executed = c.run(lambda dask_worker: dask_worker.state.executed_count)
    assert f"connected to scheduler {dep.address}" in log
    # both worker processes did part of the work
    assert len(executed) == 2 and all(n > 0 for n in executed.values()), executed

    ref_root, ref_tree = reference
    got = FW.tree(root, {"endpoint_url": moto_server})
    assert len(got) == len(ref_tree) > 150
    FW.assert_same_tree(ref_tree, got, FW.normalize_config_attrs,
                        "the distributed S3 run vs the local single-process run")
    # the master's int16 shards byte for byte (already in the tree), and decoded as users read it
    shards = [k for k in ref_tree if k.startswith("master.zarr/sm/c/")]
    assert shards and all(got[k] == ref_tree[k] for k in shards)
    a = FW.decoded_master(f"{root}/master.zarr", {"endpoint_url": moto_server})
    b = FW.decoded_master(str(ref_root / "master.zarr"))
    for v in a:
        assert np.isfinite(a[v]).any()
        np.testing.assert_array_equal(a[v], b[v])
