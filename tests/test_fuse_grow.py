"""The fuse stage grows in time: fixed parameters (fitted once on ``fusion.reference_period``),
growth by the missing days only, per-block dependency tracking, local and S3 roots.

The inputs are built directly (``fusion_testworld``) for the whole 60-day world, with the ingest
index keys the stage reads (``stored_days``), so these tests do not depend on ingest's own append.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from fusion_testworld import make_cfg, make_world, write_inputs
from sm1km.config import ReferencePeriodConfig
from sm1km.errors import InputError, StoreError
from sm1km.stages.fuse import PARAMS_NAME, STORE_NAME, fuse
from sm1km.storage import store

BLOCK = 16                      # grid.time_block_days of these tests: 60 days = 4 blocks (the last partial)
REF = ("2020-03-01", "2020-04-09")  # the first 40 days
TIMESTAMPS = {"date_created", "history", "last_updated"}


@pytest.fixture(autouse=True)
def _fixed_time(monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")


@pytest.fixture(scope="module")
def world():
    return make_world()


def _cfg(root, world, end_day: int, so=None, ref=REF, **fusion):
    """The run config over days 0..end_day (inclusive) of ``world``."""
    cfg = make_cfg(root, world, **fusion)
    upd = {"period": cfg.period.model_copy(update={"end": world.times[end_day].date()}),
           "grid": cfg.grid.model_copy(update={"time_block_days": BLOCK})}
    if ref is not None:
        upd["fusion"] = cfg.fusion.model_copy(update={"reference_period": ReferencePeriodConfig(start=ref[0],
                                                                                                 end=ref[1])})
    if so:
        upd["store"] = cfg.store.model_copy(update={"endpoint_url": so["endpoint_url"]})
    return cfg.model_copy(update=upd)


def _root(request, tmp_path, name: str) -> tuple[str, dict | None]:
    if request.param == "local":
        return str(tmp_path / name), None
    bucket, so = request.getfixturevalue("s3_bucket")
    return f"s3://{bucket}/{name}", so


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.slow)])
def roots(request, tmp_path):
    """Two roots (grown, one-shot) on the same kind of storage."""
    a, so = _root(request, tmp_path, "grown")
    b, _ = _root(request, tmp_path, "oneshot")
    return a, b, so


def _open(cfg):
    return store.open_dataset(cfg.store.url(STORE_NAME), cfg.store.storage_options(), consolidated=True)


def _chunks(cfg) -> dict[str, str]:
    """sha256 of every data chunk object of fused.zarr (sm, source_flag)."""
    url, so = cfg.store.url(STORE_NAME), cfg.store.storage_options()
    store.filesystem(url, so)[0].invalidate_cache()  # s3fs: listings cached before the stage wrote
    tree = store.checksum_tree(url, so)
    return {k: v for k, v in tree.items() if k.split("/")[0] in ("sm", "source_flag") and "/c/" in k}


def _attrs(ds) -> dict:
    out = {k: v for k, v in ds.attrs.items() if k not in TIMESTAMPS}
    conf = json.loads(out.pop("sm1km_config"))
    conf["store"].pop("root")
    out["sm1km_config"] = conf
    return out


def _assert_same(a, b):
    np.testing.assert_array_equal(a.time.values, b.time.values)
    np.testing.assert_array_equal(a.sm.values, b.sm.values)
    np.testing.assert_array_equal(a.source_flag.values, b.source_flag.values)
    assert _attrs(a) == _attrs(b)


def test_grow_day_by_day_equals_one_shot(roots, world, caplog):
    """Day 39, then 5 daily updates (40..44), then 15 days at once: equal to one run to day 59;
    published days keep their bytes (chunks of finished blocks) and values (the partial block).
    On S3 (slow on the moto server) one daily update and the 15 days."""
    grown_root, oneshot_root, so = roots
    sc = 3 if so is None else 4        # S3: 4 chunks of 4×4 cells instead of 9 of 3×3 (fewer requests)
    n_chunks = 9 if so is None else 4
    cfg = _cfg(grown_root, world, 39, so, space_chunk=sc)
    write_inputs(cfg, world, cfg.store.storage_options())
    out = fuse(cfg)
    assert out.stats["units_written"] == n_chunks * 3 and out.stats["blocks_redone"] == 3
    prev_ds, prev_chunks = _open(cfg).load(), _chunks(cfg)
    for end in ((40, 41, 42, 43, 44, 59) if so is None else (40, 59)):
        cfg = _cfg(grown_root, world, end, so, space_chunk=sc)
        with caplog.at_level(logging.INFO, logger="sm1km.stages.fuse"):
            out = fuse(cfg)
        ds = _open(cfg).load()
        n_prev = prev_ds.sizes["time"]
        assert ds.sizes["time"] == end + 1 and str(ds.time.values[-1])[:10] == str(world.times[end].date())
        np.testing.assert_array_equal(ds.time.values[:n_prev], prev_ds.time.values)
        # the published days keep their values, the chunks of finished blocks their bytes
        np.testing.assert_array_equal(ds.sm.values[:n_prev], prev_ds.sm.values)
        np.testing.assert_array_equal(ds.source_flag.values[:n_prev], prev_ds.source_flag.values)
        finished = n_prev // BLOCK
        kept = {k: v for k, v in prev_chunks.items() if int(k.split("/")[2]) < finished}
        assert kept and {k: _chunks(cfg)[k] for k in kept} == kept
        # only the blocks holding new days were computed: the partial one and the new ones
        n_blocks = -(-(end + 1) // BLOCK) - finished
        assert out.stats["blocks_redone"] == n_blocks and out.stats["units_written"] == n_chunks * n_blocks
        assert ds.attrs["time_coverage_end"] == str(world.times[end].date())
        prev_ds, prev_chunks = ds, _chunks(cfg)
    assert any("new day(s)" in r.getMessage() for r in caplog.records)

    one = _cfg(oneshot_root, world, 59, so, space_chunk=sc)
    write_inputs(one, world, one.store.storage_options())
    fuse(one)
    _assert_same(_open(cfg), _open(one))
    # the parameters were fitted once, on the reference period, in both
    p = store.open_group(cfg.store.url(PARAMS_NAME), cfg.store.storage_options()).attrs
    assert (p["fusion_reference_period_start"], p["fusion_reference_period_end"]) == REF
    assert p["fusion_params_digest"] == _open(cfg).attrs["fusion_params_digest"] == _open(one).attrs[
        "fusion_params_digest"]


def test_second_run_is_a_no_op_that_says_so(tmp_path, world, caplog):
    cfg = _cfg(tmp_path / "store", world, 59)
    write_inputs(cfg, world)
    fuse(cfg)
    before = store.checksum_tree(cfg.store.root)
    with caplog.at_level(logging.INFO, logger="sm1km.stages.fuse"):
        out = fuse(cfg)
    assert out.stats["units_written"] == 0 and out.stats["units_skipped"] == out.stats["units_total"] == 36
    assert out.stats["land_pixels"] == _open(cfg).attrs["fusion_land_pixels"] > 0
    assert any("up to date" in r.getMessage() and "nothing to do" in r.getMessage() for r in caplog.records)
    assert store.checksum_tree(cfg.store.root) == before


def _revise(world, day: int, delta: float):
    """A copy of ``world`` whose CCI day ``day`` was revised upstream (values shifted)."""
    import dataclasses

    cci = world.cci.copy()
    cci[day] = cci[day] + np.float32(delta)
    return dataclasses.replace(world, cci=cci)


def test_a_revised_day_recomputes_only_its_block(tmp_path, world, caplog):
    cfg = _cfg(tmp_path / "store", world, 59)
    write_inputs(cfg, world)
    fuse(cfg)
    chunks = _chunks(cfg)
    revised = _revise(world, 50, 0.01)            # day 50: block 3 (days 48..59), outside the reference period
    write_inputs(cfg, revised)
    with caplog.at_level(logging.INFO, logger="sm1km.stages.fuse"):
        out = fuse(cfg)
    assert out.stats["blocks_redone"] == 1 and out.stats["units_written"] == 9   # 9 space chunks × 1 block
    assert any("revised upstream: 2020-04-20" in r.getMessage() for r in caplog.records)
    after = _chunks(cfg)
    changed = {k for k in chunks if after[k] != chunks[k]}
    assert changed and {int(k.split("/")[2]) for k in changed} == {3}
    # equal to a fresh run on the revised inputs
    fresh = _cfg(tmp_path / "fresh", world, 59)
    write_inputs(fresh, revised)
    fuse(fresh)
    _assert_same(_open(cfg), _open(fresh))
    # a revised day inside the reference period: its block is recomputed, the parameters are kept (warning)
    caplog.clear()
    write_inputs(cfg, _revise(revised, 5, 0.01))
    with caplog.at_level(logging.INFO, logger="sm1km.stages.fuse"):
        out = fuse(cfg)
    assert out.stats["blocks_redone"] == 1 and out.stats["units_written"] == 9
    assert any("reference period changed" in r.getMessage() and "--overwrite" in r.getMessage()
               for r in caplog.records)
    assert _open(cfg).attrs["fusion_params_digest"] == _open(fresh).attrs["fusion_params_digest"]


def test_reference_period_is_fixed(tmp_path, world):
    root = tmp_path / "store"
    cfg = _cfg(root, world, 44, ref=None)            # default: the first run's period
    write_inputs(cfg, world)
    fuse(cfg)
    attrs = _open(cfg).attrs
    assert (attrs["fusion_reference_period_start"], attrs["fusion_reference_period_end"]) == \
        ("2020-03-01", "2020-04-14")
    # grown without a reference_period in the config: the stored one is reused
    fuse(_cfg(root, world, 59, ref=None))
    assert _open(cfg).attrs["fusion_reference_period_end"] == "2020-04-14"
    # another reference period: refused, naming the fix; --overwrite refits
    other = _cfg(root, world, 59, ref=REF)
    with pytest.raises(StoreError, match=r"fitted on the reference period 2020-03-01\.\.2020-04-14") as e:
        fuse(other)
    assert "--overwrite" in e.value.fix and "reference_period" in e.value.fix
    with pytest.raises(StoreError, match="other settings"):
        fuse(_cfg(root, world, 59, ref=None, min_overlap_days=10))
    # a reference period the inputs do not hold: refused before anything is removed, even with --overwrite
    before = store.checksum_tree(str(root))
    with pytest.raises(InputError, match="lacks 29 day.*fusion reference period"):
        fuse(_cfg(root, world, 59, ref=("2020-02-01", "2020-03-10")), overwrite=True)
    assert store.checksum_tree(str(root)) == before
    fuse(other, overwrite=True)
    assert _open(other).attrs["fusion_reference_period_end"] == REF[1]
    # the published store holds more days than the period: refused (a store only grows)
    with pytest.raises(StoreError, match="not a prefix"):
        fuse(_cfg(root, world, 30, ref=REF))
