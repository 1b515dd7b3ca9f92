"""Shared fixtures: a real S3 endpoint (moto server mode on loopback) and the repo paths."""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA_REAL = REPO / "tests" / "data" / "real"
SHARED_REAL = REPO.parent / "shared" / "data" / "real"
BENCHMARKS = REPO / "benchmarks"  # the benchmark harness (benchmarks/harness/) is not an installed package
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(BENCHMARKS), os.environ.get("PYTHONPATH")) if p)

# Dummy credentials for the moto endpoint only (not secrets): set before boto/s3fs import them.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


@pytest.fixture(scope="session")
def moto_server():
    """A real S3 API on 127.0.0.1 (moto's ThreadedMotoServer); yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(moto_server):
    """A fresh, empty bucket on the moto server; yields (bucket_name, storage_options)."""
    import s3fs

    name = f"test-{uuid.uuid4().hex[:12]}"
    opts = {"endpoint_url": moto_server, "anon": False}
    fs = s3fs.S3FileSystem(**opts, skip_instance_cache=True)
    fs.mkdir(name)
    yield name, opts


@pytest.fixture(params=["local", "s3"])
def store_root(request, tmp_path):
    """A store root URL + storage options, parametrised over a local path and an S3 bucket."""
    if request.param == "local":
        yield str(tmp_path / "store"), {}
    else:
        bucket, opts = request.getfixturevalue("s3_bucket")
        yield f"s3://{bucket}/run", opts


# the faults world (tests/faults_world.py), once per session for the crash, worker-loss, object-store
# fault and topology tests: ``base`` (their folder), ``world`` (synthesised, ingested, fused, model
# trained) and ``reference`` (the uninterrupted local single-process run: its root and object tree)
@pytest.fixture(scope="session")
def base(tmp_path_factory):
    return tmp_path_factory.getbasetemp() / "sm1km-faults"


@pytest.fixture(scope="session")
def world(base):
    import faults_world as FW

    return FW.build_world(base)


@pytest.fixture(scope="session")
def reference(base, world):
    import faults_world as FW

    root = FW.reference_root(base, world)
    return root, FW.tree(str(root))
