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

TLS is on, as in the chart ([14]): a throw-away CA and certificate (``tls_helpers.make_tls``, PEM
files like the chart's Secret), the real ``dask scheduler``/``dask worker --tls-ca-file --tls-cert
--tls-key`` flags (``tls://`` listeners, encryption required), and the runner configured like the
chart's runner pod: ``cluster.security.tls: true`` with the paths only in the dask config environment
and the operator-style ``tcp://`` ``$DASK_SCHEDULER_ADDRESS``, which it must dial as ``tls://``.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

import faults_world as FW
import proc_helpers as P
from tls_helpers import TLSFiles, make_tls

pytestmark = [pytest.mark.slow, pytest.mark.network]

RUN_TIMEOUT_S = 420


def _security(tls: TLSFiles):
    from distributed.security import Security

    return Security(tls_ca_file=str(tls.ca), tls_client_cert=str(tls.cert), tls_client_key=str(tls.key),
                    require_encryption=True)


@contextlib.contextmanager
def tls_deployment(log_dir: Path, tls: TLSFiles, n_workers: int = 2):
    """``dask scheduler`` + ``n_workers`` ``dask worker`` processes on 127.0.0.1, TLS only (the
    real --tls-* flags); yields the scheduler's tls:// address; kills them all at exit."""
    from distributed import Client

    procs: list[P.Proc] = []
    sched_file = Path(log_dir) / "scheduler.json"
    try:
        procs.append(P.start("scheduler", [sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1",
                                           "--port", "0", "--protocol", "tls", *tls.cli_flags(), "--no-dashboard",
                                           "--scheduler-file", str(sched_file)], log_dir))

        def ready() -> bool:
            try:
                return bool(json.loads(sched_file.read_text()).get("address"))
            except (OSError, ValueError):
                return False

        P.poll_until(ready, P.START_TIMEOUT_S, 0.1, alive=procs[0], what="the scheduler file")
        address = json.loads(sched_file.read_text())["address"]
        for i in range(n_workers):
            procs.append(P.start(f"worker-{i}", [
                sys.executable, "-m", "dask", "worker", address, "--host", "127.0.0.1", "--nworkers", "1",
                "--nthreads", "1", "--no-dashboard", "--name", f"worker-{i}", "--memory-limit", "2GiB",
                *tls.cli_flags(), "--local-directory", str(Path(log_dir) / f"worker-{i}-space")], log_dir))
        t_end = time.monotonic() + P.START_TIMEOUT_S
        with Client(address, timeout=30, security=_security(tls)) as c:
            while len(c.scheduler_info(n_workers=-1)["workers"]) < n_workers:
                for p in procs:
                    assert p.alive(), f"{p.name} exited; log tail:\n{p.tail()}"
                assert time.monotonic() < t_end, "the TLS workers did not join"
                time.sleep(0.1)
        yield address
    finally:
        P.stop_all(procs)


def test_separate_processes_on_s3_equal_the_local_single_process_run(world, reference, moto_server, tmp_path):
    import s3fs

    bucket = f"topology-{uuid.uuid4().hex[:10]}"
    s3fs.S3FileSystem(endpoint_url=moto_server, skip_instance_cache=True).mkdir(bucket)
    root = f"s3://{bucket}/run"
    run_yaml = FW.write_run_yaml(world, tmp_path / "job", root=root, endpoint_url=moto_server,
                                 cluster={"kind": "address", "security": {"tls": True}})
    tls = make_tls(tmp_path / "tls")

    with tls_deployment(tmp_path / "cluster", tls, n_workers=2) as address:
        assert address.startswith("tls://127.0.0.1:")
        from distributed import Client

        with pytest.raises(OSError):  # the scheduler speaks TLS only: a plain client is turned away
            Client(address.replace("tls://", "tcp://"), timeout="3s")
        # like the operator: a tcp:// address; the certificate paths only in the dask config env
        runner = P.sm1km("runner", ["-v", "run", "--config", str(run_yaml), "--stages", ",".join(FW.RUN_STAGES)],
                         tmp_path, env=FW.child_env(DASK_SCHEDULER_ADDRESS=address.replace("tls://", "tcp://"),
                                                    **tls.dask_env()))
        try:
            assert runner.wait(RUN_TIMEOUT_S) == 0, runner.tail()
        finally:
            runner.kill()
        log = runner.tail(10**6)
        with Client(address, timeout=30, security=_security(tls)) as c:
            executed = c.run(lambda dask_worker: dask_worker.state.executed_count)
            assert all(a.startswith("tls://") for a in c.scheduler_info(n_workers=-1)["workers"])
    assert f"connected to scheduler {address}" in log
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
