"""Bad input meets the real CLI: one paragraph naming the file or key, the problem and the fix;
exit code 2; no traceback; the stores exactly as they were (``store.checksum_tree``).

The corpus is generated (tests/bad_inputs.py): one tiny world is written and ingested (plus fused
and given a small model) once per module; every case damages a private copy of it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import bad_inputs as B
from sm1km.cli import main
from sm1km.config import RunConfig
from sm1km.storage import store

AWS_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


@pytest.fixture(scope="module")
def base_world(tmp_path_factory):
    """The corpus world: written, ingested and fused once, with a small model at model.path."""
    mp = pytest.MonkeyPatch()
    for k in AWS_VARS:  # local stores only: rasterio would make an AWS session per GeoTIFF read
        mp.delenv(k, raising=False)
    try:
        w = B.write_tiny_world(tmp_path_factory.mktemp("bad") / "world")
        run_yaml = str(w.run_yaml)
        assert main(["ingest", "--config", run_yaml]) == 0
        assert main(["fuse", "--config", run_yaml]) == 0
        B.train_fake_model(RunConfig.from_yaml(run_yaml))
    finally:
        mp.undo()
    return Path(w.run_yaml).parent


@pytest.fixture
def world(base_world, tmp_path) -> Path:
    d = tmp_path / "world"
    shutil.copytree(base_world, d)
    return d


def _data(root: Path, name: str) -> dict:
    ds = store.open_dataset(str(root / "store" / "inputs" / name))
    return {v: ds[v].values for v in ds.data_vars}


def _error_line(err: str, command: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith(f"sm1km {command}: error: ")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("case", B.CASES, ids=str)
def test_bad_input_gives_one_clear_paragraph_and_leaves_the_stores(case, world, capsys, caplog, monkeypatch,
                                                                    request):
    extra = ()
    if case.needs == "s3":
        extra = (request.getfixturevalue("moto_server"),)
    else:
        for k in AWS_VARS:
            monkeypatch.delenv(k, raising=False)
    before_data = {n: _data(world, n) for n in ("cci.zarr", "era5.zarr")} if case.exit_code == 0 else {}
    names = case.damage(world, *extra)
    before = store.checksum_tree(str(world / "store"))  # as the command finds it (some cases damage the store)
    capsys.readouterr()

    rc = main([case.command, "--config", str(world / "run.yaml")])
    err = capsys.readouterr().err

    assert "Traceback" not in err
    assert rc == case.exit_code, err
    assert not (world / "store" / "_staging").exists()
    assert not (world / "store" / "_locks" / "run.lock").exists()
    if case.exit_code == 0:  # accepted inputs: read correctly
        for n, arrays in before_data.items():
            after = _data(world, n)
            for v, a in arrays.items():
                np.testing.assert_array_equal(after[v], a, err_msg=f"{case.name}: {n}:{v}")
        for name in names:
            assert name in caplog.text or name in err, (name, caplog.text[-2000:])
        return
    msg = _error_line(err, case.command)
    for name in names:
        assert name in msg, (name, msg)
    for words in case.says:
        assert words in msg, (words, msg)
    assert " Fix: " in msg and len(msg.split(" Fix: ", 1)[1]) > 10, msg
    assert "planted" not in msg  # a secret in the config is refused, never echoed
    after = store.checksum_tree(str(world / "store"))
    if case.keeps == "existing":
        assert {k: after.get(k) for k in before} == before
        new = sorted(set(after) - set(before))
        assert not [k for k in new if k.endswith("zarr.json") and k.count("/") == 1
                    and json.loads((world / "store" / k).read_bytes()).get("consolidated_metadata")], new
    else:
        assert after == before


def test_station_outside_the_region_is_flagged(world, capsys, monkeypatch):
    for k in AWS_VARS:
        monkeypatch.delenv(k, raising=False)
    B.ismn_station_outside(world)
    assert main(["ingest", "--config", str(world / "run.yaml")]) == 0
    st = store.open_dataset(str(world / "store" / "inputs" / "stations.zarr"))
    flags = dict(zip(map(str, st["station"].values), st["in_region"].values.tolist()))
    assert flags.pop("AGRINET/FARAWAY") is False
    assert all(flags.values())


def _no_credentials_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_SHARED_CREDENTIALS_FILE=os.devnull, AWS_CONFIG_FILE=os.devnull, AWS_EC2_METADATA_DISABLED="true")
    return env


def test_missing_credentials_are_named_not_a_traceback(world, moto_server, s3_bucket):
    """No AWS_* variables, no credentials files, no instance metadata: botocore finds no credentials
    at all (NoCredentialsError); the stage says so in one paragraph and the bucket stays empty."""
    bucket, so = s3_bucket
    B.edit_config(world / "run.yaml", lambda d: d["store"].update(root=f"s3://{bucket}/run", endpoint_url=moto_server))
    for command in ("ingest", "downscale"):
        res = subprocess.run([sys.executable, "-m", "sm1km.cli", command, "--config", str(world / "run.yaml")],
                             env=_no_credentials_env(), capture_output=True, text=True, timeout=120)
        assert res.returncode == 2, res.stderr
        assert "Traceback" not in res.stderr, res.stderr
        msg = _error_line(res.stderr, command)
        assert "no usable S3 credentials" in msg and "AWS_SECRET_ACCESS_KEY" in msg and " Fix: " in msg, msg
        assert f"s3://{bucket}/run" in msg
    assert store.checksum_tree(f"s3://{bucket}/run", so) == {}
