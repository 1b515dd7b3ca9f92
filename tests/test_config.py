"""Config validation: unknown keys and invalid values name the key; the example validates."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from sm1km.cli import main
from sm1km.config import EXAMPLE_CONFIG, RunConfig
from sm1km.errors import ConfigError


def _example():
    return yaml.safe_load(EXAMPLE_CONFIG)


def test_example_validates_and_derives():
    cfg = RunConfig.from_dict(_example())
    assert cfg.coarse_region.n_rows == 16 and cfg.fine_grid.factor == 30
    assert cfg.period.n_days == 90
    assert cfg.model_path.endswith("model/model.ubj")


def test_cli_example_roundtrip(tmp_path, capsys):
    assert main(["config", "--example"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("#")  # commented
    p = tmp_path / "run.yaml"
    p.write_text(text)
    assert main(["config", "--check", str(p)]) == 0
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["store"]["root"] == str((tmp_path / "work" / "store").resolve())


@pytest.mark.parametrize("mutate, key", [
    (lambda d: d.update(colour="red"), "colour"),
    (lambda d: d["region"].update(widht=3), "region.widht"),
    (lambda d: d["region"].update(west=20), "region"),
    (lambda d: d["period"].update(end="2020-01-01"), "period"),
    (lambda d: d["grid"].update(factor=0), "grid.factor"),
    (lambda d: d["cluster"].update(kind="slurm"), "cluster.kind"),
    (lambda d: d["fusion"].update(method="magic"), "fusion.method"),
    (lambda d: d.pop("store"), "store"),
    (lambda d: d["store"].update(client_kwargs={"aws_secret_access_key": "x"}), "store.client_kwargs"),
])
def test_invalid_config_names_the_key(mutate, key):
    d = _example()
    mutate(d)
    with pytest.raises(ConfigError) as ei:
        RunConfig.from_dict(d, source="run.yaml")
    assert f"'{key}" in str(ei.value) and "run.yaml" in str(ei.value)


def test_cli_bad_config_exit_2_one_paragraph(tmp_path):
    d = _example()
    d["period"]["start"] = "2021-01-01"
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(d))
    r = subprocess.run([sys.executable, "-m", "sm1km.cli", "config", "--check", str(p)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and "period" in r.stderr and "bad.yaml" in r.stderr


def test_missing_and_unparseable_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        RunConfig.from_yaml(tmp_path / "nope.yaml")
    p = tmp_path / "broken.yaml"
    p.write_text("region: [unclosed\n")
    with pytest.raises(ConfigError, match="YAML"):
        RunConfig.from_yaml(p)


def test_storage_options_never_carry_secrets(monkeypatch):
    d = _example()
    d["store"] = {"root": "s3://bucket/run", "endpoint_url": "http://127.0.0.1:9000"}
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "planted-secret-123")
    cfg = RunConfig.from_dict(d)
    so = cfg.store.storage_options()
    assert so == {"anon": False, "endpoint_url": "http://127.0.0.1:9000"}
    assert "planted-secret-123" not in repr(cfg.redacted())


def test_version_and_help():
    r = subprocess.run([sys.executable, "-m", "sm1km.cli", "--version"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("sm1km ")
