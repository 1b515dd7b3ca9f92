"""The command table: real callables, one thin module per verb, a cheap ``--version``, and the
usual exit-2 paragraph when a verb cannot even build its options (``bench`` without its harness)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import sm1km
from sm1km.cli import COMMANDS, main

PKG = Path(sm1km.__file__).resolve().parent


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SM1KM_BENCHMARKS", "PYTHONPATH")}
    return env


@pytest.mark.parametrize("verb", list(COMMANDS))
def test_every_verb_is_its_own_module(verb):
    v = COMMANDS[verb]
    assert v.add_arguments.__module__ == v.run.__module__ == f"sm1km.cli.{verb}"
    assert v.help


def test_the_pipeline_table_holds_the_stage_functions():
    from sm1km.pipeline import DEFAULT_STAGES, STAGES
    from sm1km.stages.fuse import fuse
    from sm1km.validation.validate import validate

    assert STAGES["fuse"] is fuse and STAGES["validate"] is validate
    assert set(DEFAULT_STAGES) <= set(STAGES) and all(callable(f) for f in STAGES.values())


def test_version_and_help_import_no_stage(tmp_path):
    """What keeps ``sm1km --version`` / ``--help`` fast: they load neither a stage nor numpy/pydantic."""
    code = ("import sys\nfrom sm1km.cli import main\n"
            "for argv in (['--version'], ['--help']):\n"
            "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('numpy', 'pydantic', 'xarray', 'dask', 'zarr')"
            " or m.startswith(('sm1km.stages', 'sm1km.storage', 'sm1km.config', 'sm1km.pipeline')))\n"
            "print('HEAVY', heavy)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "HEAVY []" in r.stdout, r.stdout[-500:]


def test_python_dash_m_runs_the_cli():
    r = subprocess.run([sys.executable, "-m", "sm1km.cli", "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "usage: sm1km" in r.stdout and "bench" in r.stdout


def test_bench_help_without_the_harness_is_the_usual_error(tmp_path):
    """An installation without ``benchmarks/harness`` (a wheel): exit 2, one paragraph, no traceback."""
    site = tmp_path / "a" / "b"  # sm1km/cli/bench.py looks for <parents[3]>/benchmarks = tmp_path/a/benchmarks
    shutil.copytree(PKG, site / "sm1km", ignore=shutil.ignore_patterns("__pycache__"))
    env = {**_clean_env(), "PYTHONPATH": str(site)}
    for argv in (["bench", "--help"], ["bench", "--preset", "tiny"]):
        r = subprocess.run([sys.executable, "-m", "sm1km.cli", *argv], capture_output=True, text=True, timeout=120,
                           env=env, cwd=tmp_path)
        assert r.returncode == 2, (r.stdout, r.stderr)
        assert "Traceback" not in r.stderr
        assert r.stderr.startswith("sm1km bench: error: ") and "benchmarks/harness" in r.stderr
        assert "SM1KM_BENCHMARKS" in r.stderr
    # the other verbs do not care
    r = subprocess.run([sys.executable, "-m", "sm1km.cli", "config", "--example"], capture_output=True, text=True,
                       timeout=120, env=env, cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.startswith("#")


def test_unknown_stage_is_a_config_error(tmp_path, capsys):
    from sm1km.config import EXAMPLE_CONFIG

    yml = tmp_path / "run.yaml"
    yml.write_text(EXAMPLE_CONFIG)
    assert main(["run", "--config", str(yml), "--stages", "ingest,bogus"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sm1km run: error: ") and "bogus" in err and "choose from ingest, fuse," in err
