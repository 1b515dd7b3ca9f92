"""The demo-world scores in docs/model.md and docs/validation.md are generated from docs/demo-metrics.json.

Fast: no demo run. Regenerate (after a change to the world, the model selection or the metrics) with
``sm1km demo --workdir W && python -m sm1km.validation.docnums --capture W/store/report/metrics.json
--docs .`` (see :mod:`sm1km.validation.docnums`).
"""

from __future__ import annotations

import json
from pathlib import Path

from sm1km.config import SeedsConfig
from sm1km.stages.train import TRAIN_VERSION
from sm1km.synth import preset
from sm1km.synth.generate import WORLD_FORMAT_VERSION
from sm1km.validation.docnums import BLOCKS, JSON_PATH, capture, doc_block, render_block, update_doc, update_docs

ROOT = Path(__file__).resolve().parents[1]
REGEN = ("regenerate: sm1km demo --workdir W && python -m sm1km.validation.docnums --capture "
         "W/store/report/metrics.json --docs .")


def _committed() -> dict:
    return json.loads((ROOT / JSON_PATH).read_text())


def test_committed_json_belongs_to_the_current_world_and_train():
    s = _committed()["source"]
    assert s["preset"] == "demo" and s["synth_seed"] == SeedsConfig().synth and s["n_days"] == preset("demo").n_days
    assert s["world_format"] == WORLD_FORMAT_VERSION and s["train_version"] == TRAIN_VERSION, REGEN


def test_committed_json_has_no_machine_paths():
    text = (ROOT / JSON_PATH).read_text()
    d = json.loads(text)
    assert "outputs" not in d
    for bad in ('"/tmp', '"/home', '"/work', '"/root', '"/Users', '://'):
        assert bad not in text, bad


def test_doc_blocks_equal_the_rendering_of_the_committed_json():
    d = _committed()
    for name, page in BLOCKS.items():
        assert doc_block(ROOT / page, name) == render_block(name, d), f"{page} block {name} is stale; {REGEN}"


def test_update_rewrites_only_the_block_and_capture_strips_paths(tmp_path):
    d = _committed()
    page = tmp_path / "model.md"
    page.write_text((ROOT / "docs/model.md").read_text())
    changed = json.loads(json.dumps(d))
    changed["model"]["selection"]["candidates"]["rf/sm"]["ubrmse_pooled"] = 0.9
    assert update_doc(page, "demo-targets", changed)
    assert "0.9000" in doc_block(page, "demo-targets") and "0.9000" not in doc_block(ROOT / "docs/model.md", "demo-targets")
    outside = page.read_text().replace(render_block("demo-targets", changed), "")
    assert outside == (ROOT / "docs/model.md").read_text().replace(render_block("demo-targets", d), "")
    assert not update_doc(page, "demo-targets", changed)  # idempotent
    # capture: drops the file list and any absolute path, keeps the numbers
    raw = dict(d, outputs={"fused": "/x/store/fused.zarr"})
    raw["truth"] = dict(d.get("truth") or {}, truth="/x/store/truth.zarr")
    got = capture(raw)
    assert "outputs" not in got and "truth" not in got["truth"] and got["model"] == d["model"]
    # a repository copy: every block is rewritten in place
    for p in set(BLOCKS.values()):
        (tmp_path / p).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / p).write_text((ROOT / p).read_text())
    assert update_docs(tmp_path, changed) == ["demo-targets", "demo-selection"]
