"""``train`` is resumable: a model up to date with its inputs is kept (nothing written), a changed
input retrains and says what changed, ``--overwrite`` retrains regardless (the card's ``training_deps``)."""

from __future__ import annotations

import json
import logging
import os

import pytest

from model_world import make_world
from sm1km.cli import main
from sm1km.stages.train import DEPS_KEY, TRAIN_VERSION, train
from sm1km.storage import model as M
from sm1km.storage import store

FAST = {"rf_trees": 10, "gbt_max_rounds": 30, "n_threads": 1, "algorithms": ("gbt",), "target": "sm"}
FOLDS = 2  # fewer CV folds: the test is about what is kept, not the model
CLI_FAST = ["--rf-trees", "10", "--gbt-max-rounds", "30", "--threads", "1", "--target", "sm"]


@pytest.fixture(autouse=True)
def _fresh_cache():
    M.clear_model_cache()
    yield
    M.clear_model_cache()


def _files(cfg) -> dict[str, tuple[bytes, int, int]]:
    """{path: (bytes, inode, mtime_ns)} of the model folder and metrics.json."""
    out = {}
    head = os.path.dirname(cfg.model_path)
    for p in [*(os.path.join(head, n) for n in sorted(os.listdir(head))), cfg.store.url("report", "metrics.json")]:
        st = os.stat(p)
        out[p] = (open(p, "rb").read(), st.st_ino, st.st_mtime_ns)
    return out


def _counts(result) -> dict:
    return {k: result.stats[k] for k in ("units_total", "units_written", "units_skipped", "up_to_date")}


def test_rerun_keeps_an_up_to_date_model_and_writes_nothing(tmp_path, caplog):
    cfg, _ = make_world(str(tmp_path / "run"), cv_folds=FOLDS)
    first = train(cfg, **FAST)
    assert _counts(first) == {"units_total": 2, "units_written": 2, "units_skipped": 0, "up_to_date": False}
    card = json.loads(open(first["card"]).read())
    assert card[DEPS_KEY]["version"] == TRAIN_VERSION and len(card[DEPS_KEY]["table"]) == 64
    before = _files(cfg)
    with caplog.at_level(logging.INFO, logger="sm1km.stages.train"):
        again = train(cfg, **FAST)
    assert _counts(again) == {"units_total": 2, "units_written": 0, "units_skipped": 2, "up_to_date": True}
    assert dict(again) == dict(first)
    assert _files(cfg) == before  # same bytes, same inode and modification time: nothing rewritten
    assert "is up to date" in caplog.text and "--overwrite retrains" in caplog.text
    assert again.stats["algorithm"] == first.stats["algorithm"] == "gbt"
    assert again.stats["n_samples"] == first.stats["n_samples"]

    # metrics.json lost its model section: restored from the card, the model is not touched
    metrics = json.loads(open(first["metrics"]).read())
    store.write_json(first["metrics"], {k: v for k, v in metrics.items() if k != "model"})
    assert train(cfg, **FAST).stats["up_to_date"]
    assert json.loads(open(first["metrics"]).read()) == metrics
    assert {p: v for p, v in _files(cfg).items() if p != first["metrics"]} == \
        {p: v for p, v in before.items() if p != first["metrics"]}

    # a damaged booster: retrained (deterministic: the same bytes again)
    good = open(first["uncertainty"], "rb").read()
    raw = bytearray(good)
    raw[len(raw) // 2] ^= 0xFF
    open(first["uncertainty"], "wb").write(bytes(raw))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="sm1km.stages.train"):
        r = train(cfg, **FAST)
    assert r.stats["units_written"] == 2 and "uncertainty.ubj does not match the sha256" in caplog.text
    assert open(first["uncertainty"], "rb").read() == good

    # a card from before training_deps (older sm1km): retrained once, then kept
    del card[DEPS_KEY]
    store.write_json(first["card"], card)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="sm1km.stages.train"):
        assert train(cfg, **FAST).stats["units_written"] == 2
    assert "records no training inputs" in caplog.text
    assert train(cfg, **FAST).stats["up_to_date"]


def test_changed_inputs_retrain_and_name_the_change(tmp_path, caplog):
    cfg, _ = make_world(str(tmp_path / "run"), cv_folds=FOLDS)
    train(cfg, **FAST)
    sha = json.loads(open(M.card_url(cfg.model_path)).read())["files"]["model.ubj"]["sha256"]
    # another setting of the model section, and another option of the stage
    cfg3 = cfg.model_copy(update={"model": cfg.model.model_copy(update={"cv_folds": FOLDS + 1})})
    with caplog.at_level(logging.INFO, logger="sm1km.stages.train"):
        r = train(cfg3, **{**FAST, "gbt_max_rounds": 20})
    (line,) = [ln for ln in caplog.text.splitlines() if "inputs changed:" in ln]
    assert r.stats["units_written"] == 2 and "model {" in line and "cv_folds" in line and "options" in line, line
    # other training data: the stores rewritten with other station noise (same settings as the first run)
    cfg2, _ = make_world(str(tmp_path / "run"), cv_folds=FOLDS, noise=0.02)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="sm1km.stages.train"):
        r = train(cfg2, **FAST)
    (line,) = [ln for ln in caplog.text.splitlines() if "inputs changed:" in ln]
    assert r.stats["units_written"] == 2 and line.endswith(", table)"), line
    assert json.loads(open(r["card"]).read())["files"]["model.ubj"]["sha256"] != sha


def test_cli_overwrite_retrains_an_up_to_date_model(tmp_path):
    cfg, _ = make_world(str(tmp_path / "run"), cv_folds=FOLDS, algorithm="gbt")
    yml = tmp_path / "run.yaml"
    yml.write_text(cfg.to_yaml())
    assert main(["train", "--config", str(yml), *CLI_FAST]) == 0
    before = _files(cfg)
    assert main(["train", "--config", str(yml), *CLI_FAST]) == 0
    assert _files(cfg) == before  # kept
    assert main(["train", "--config", str(yml), *CLI_FAST, "--overwrite"]) == 0
    after = _files(cfg)
    model = cfg.model_path
    assert after[model][0] == before[model][0]  # deterministic: the same bytes ...
    assert after[model][1:] != before[model][1:]  # ... written again
