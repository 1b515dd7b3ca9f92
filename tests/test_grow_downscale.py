"""downscale + aggregate grow in time ([13] living record), local and S3 (moto server):

* a master + monthly store computed to day N and then grown day by day to N+k equal a one-shot
  run to N+k (decoded arrays; time coordinates and ``time_bnds`` checked explicitly);
* across 5 daily growth steps a published inner chunk never changes its bytes, and every index
  entry of a replaced shard still points at the bytes it pointed at (a reader holding the old
  index reads old data, never a mix); complete shards and closed months are not rewritten;
* a second run is a no-op (nothing written, not even the root ``zarr.json``);
* a revised fused day recomputes exactly the master shards of its time block and its month
  (counted), and the result equals a fresh run on the revised inputs.

The world is ``downscale_world`` (2×2 cells, factor 10, 40 days from 2020-01-01, shards of one cell ×
16 days, inner chunks of 2 days); runs use its first N days. The model is trained once and pinned.
"""

from __future__ import annotations

import posixpath

import numpy as np
import pandas as pd
import pytest

from downscale_world import make_world
from sm1km.config import PeriodConfig
from sm1km.stages import aggregate, downscale
from sm1km.storage import master, store
from sm1km.storage.shard_codec import EMPTY, decode_index

N0, K = 29, 5  # day 29 = 2020-01-29: the growth closes January, starts February and a new time block


def with_days(cfg, n: int):
    start = cfg.period.start
    return cfg.model_copy(update={"period": PeriodConfig(start=start, end=start + pd.Timedelta(days=n - 1))})


def run(cfg):
    return downscale.downscale(cfg), aggregate.aggregate(cfg)


def decoded(cfg):
    so = cfg.store.storage_options()
    m = store.open_dataset(cfg.store.url(master.MASTER_STORE), so, consolidated=True)
    mo = store.open_dataset(cfg.store.url(master.MONTHLY_STORE), so, consolidated=True)
    return {"time": m.time.values, "sm": m.sm.values, "sm_uncertainty": m.sm_uncertainty.values,
            "monthly_time": mo.time.values, "time_bnds": mo.time_bnds.values, "monthly_sm": mo.sm.values,
            "n_valid_days": mo.n_valid_days.values}


def shard_objects(cfg, name: str, var: str) -> dict[str, bytes]:
    """{object key under ``var``: bytes} of a store's array."""
    fs, path = store.filesystem(cfg.store.url(name), cfg.store.storage_options())
    base = posixpath.join(path, var)
    return {p[len(base) + 1:]: fs.cat_file(p) for p in fs.find(base) if not p.endswith("zarr.json")}


def n_inner(cfg, name: str, var: str) -> tuple[int, int]:
    """(inner chunks per shard, days (months) per inner chunk) of a store's array."""
    g = store.open_group(cfg.store.url(name), cfg.store.storage_options(), use_consolidated=False)
    arr = store.array(g, var)
    shard, inner = arr.shards, arr.chunks
    return int(np.prod([s // c for s, c in zip(shard, inner)])), int(inner[0])


def chunk_bytes(obj: bytes, n: int) -> list[bytes | None]:
    idx = decode_index(obj, n)
    return [None if off == EMPTY else obj[int(off):int(off) + int(nb)] for off, nb in idx]


def wipe(cfg):
    so = cfg.store.storage_options()
    for name in (master.MASTER_STORE, master.MONTHLY_STORE):
        store.remove(cfg.store.url(name), so)
        store.remove(store.join(cfg.store.root, "_ledger", name), so)


def check_growth_step(cfg, before: dict[str, bytes], after: dict[str, bytes], n_pub: int, var_store: str,
                      var: str, time_block: int) -> int:
    """Invariants of one growth step over one array; returns how many objects changed."""
    n, per = n_inner(cfg, var_store, var)
    changed = 0
    for key, old in before.items():
        new = after[key]  # a published object is never deleted
        if new == old:
            continue
        changed += 1
        t_shard = int(key.split("/")[1])  # c/<t>/<y>/<x>
        t0 = t_shard * time_block
        assert t0 + time_block > n_pub, f"complete shard {key} was rewritten"
        old_idx, new_chunks = decode_index(old, n), chunk_bytes(new, n)
        for i, (off, nb) in enumerate(old_idx):
            if off == EMPTY:
                continue
            # a reader holding the old index still reads the old bytes from the replaced object
            assert new[int(off):int(off) + int(nb)] == old[int(off):int(off) + int(nb)]
            # an inner chunk of published days only keeps its bytes exactly
            if t0 + (i + 1) * per <= n_pub:
                assert new_chunks[i] == old[int(off):int(off) + int(nb)], f"{key} inner chunk {i} changed"
    return changed


@pytest.mark.slow
def test_grown_day_by_day_equals_one_shot(store_root):
    root, so = store_root
    cfg40, _ = make_world(root, so)
    final = with_days(cfg40, N0 + K)
    run(final)
    want = decoded(final)
    wipe(final)

    d, a = run(with_days(cfg40, N0))
    assert d.stats["days_added"] == N0 and a.stats["months"] == 1 and a.stats["months_open"] == 1
    tb = final.grid.time_block_days
    jan_closed_bytes = None
    for n in range(N0 + 1, N0 + K + 1):
        cfg = with_days(cfg40, n)
        before = {v: shard_objects(cfg, master.MASTER_STORE, v) for v in ("sm", "sm_uncertainty")}
        before_m = shard_objects(cfg, master.MONTHLY_STORE, "sm")
        d, a = run(cfg)
        assert d.stats["days_published"] == n - 1 and d.stats["days_added"] == 1
        # only the time block holding the new day is computed: 4 tiles (the sea tile writes nothing)
        assert d.stats["blocks_redone"] == 1 and d.stats["shards_written"] == 4
        for v in ("sm", "sm_uncertainty"):
            after = shard_objects(cfg, master.MASTER_STORE, v)
            changed = check_growth_step(cfg, before[v], after, n - 1, master.MASTER_STORE, v, tb)
            assert changed <= 3  # the 3 land tiles' last shard (a new block's shard is a new object)
        after_m = shard_objects(cfg, master.MONTHLY_STORE, "sm")
        check_growth_step(cfg, before_m, after_m, 0, master.MONTHLY_STORE, "sm", 12)
        # the month of the new day only: January while open, then February (new), never January again
        assert a.stats["months_redone"] == 1 and a.stats["chunks_written"] == 4
        new_day = pd.Timestamp(cfg.period.end)
        assert a.stats["months"] == (2 if new_day.month == 2 else 1)
        jan = {k: chunk_bytes(v, 12)[0] for k, v in after_m.items()}
        if new_day >= pd.Timestamp("2020-01-31"):
            if jan_closed_bytes is None:
                jan_closed_bytes = jan
            assert jan == jan_closed_bytes  # a closed month keeps its bytes
        ds = store.open_dataset(cfg.store.url(master.MASTER_STORE), so, consolidated=True)
        assert pd.Timestamp(ds.time.values[-1]) == new_day and ds.sizes["time"] == n
        assert ds.attrs["time_coverage_end"] == str(new_day.date())
    assert jan_closed_bytes is not None

    got = decoded(final)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    assert list(pd.DatetimeIndex(got["time"])) == list(pd.date_range("2020-01-01", periods=N0 + K, freq="D"))
    assert list(pd.DatetimeIndex(got["monthly_time"])) == [pd.Timestamp("2020-01-01"), pd.Timestamp("2020-02-01")]
    np.testing.assert_array_equal(got["time_bnds"].astype("datetime64[D]"),
                                  np.array([["2020-01-01", "2020-02-01"], ["2020-02-01", "2020-03-01"]],
                                           "datetime64[D]"))

    # a second run is a no-op: nothing is written, not even the root zarr.json
    sums = {n: store.checksum_tree(final.store.url(n), so) for n in (master.MASTER_STORE, master.MONTHLY_STORE)}
    d, a = run(final)
    assert d.stats["shards_written"] == 0 and d.stats["days_added"] == 0 and d.stats["blocks_redone"] == 0
    assert a.stats["chunks_written"] == 0 and a.stats["months_redone"] == 0
    assert {n: store.checksum_tree(final.store.url(n), so) for n in sums} == sums


def _revise_fused_day(cfg, day: int) -> None:
    """Change fused ``sm`` of one land cell on ``day`` in place (a revised upstream day)."""
    g = store.open_group(cfg.store.url("fused.zarr"), cfg.store.storage_options(), mode="r+",
                         use_consolidated=False)
    arr = store.array(g, "sm")
    v = np.asarray(arr[day, 0, 1])
    arr[day, 0, 1] = v + (np.asarray(0.02, arr.dtype) if arr.dtype.kind == "f" else np.asarray(20, arr.dtype))


def test_revised_fused_day_recomputes_its_block_only(store_root):
    root, so = store_root
    cfg40, _ = make_world(root, so)
    cfg = with_days(cfg40, 36)
    run(cfg)
    keys = {k: store.Ledger(root, master.MASTER_STORE, so).info(k) for k in
            store.Ledger(root, master.MASTER_STORE, so).keys() if k.startswith("lat-")}
    assert all("deps" in v for v in keys.values())
    before = shard_objects(cfg, master.MASTER_STORE, "sm")
    orig = decoded(cfg)

    _revise_fused_day(cfg, 20)  # 2020-01-21: time block 16-32, January
    d, a = run(cfg)
    assert d.stats["blocks_redone"] == 1 and d.stats["shards_written"] == 4 and d.stats["days_added"] == 0
    after = shard_objects(cfg, master.MASTER_STORE, "sm")
    changed = {k for k in after if after[k] != before.get(k)}
    assert changed and all(k.split("/")[1] == "1" for k in changed)  # time shard 1 = days 16-31 only
    assert a.stats["months_redone"] == 1 and a.stats["chunks_written"] == 4  # January, 4 tiles
    got = decoded(cfg)

    wipe(cfg)
    run(cfg)
    fresh = decoded(cfg)
    for k in fresh:
        np.testing.assert_array_equal(got[k], fresh[k], err_msg=k)
    # the revision is visible in the product, on that day only
    assert not np.array_equal(got["sm"][20, :10, 10:], orig["sm"][20, :10, 10:])
    other = np.ones(36, bool)
    other[20] = False
    np.testing.assert_array_equal(got["sm"][other], orig["sm"][other])


def test_fuse_block_digests_limit_what_is_read_again(tmp_path, caplog):
    """With the fuse stage's block digests, fused.zarr is re-read only for blocks whose digest changed,
    and a revised day still recomputes only its master block and its month."""
    from sm1km.storage.deps import BlockDigests

    cfg40, _ = make_world(str(tmp_path / "run"))
    cfg = with_days(cfg40, 36)
    fb = BlockDigests(cfg.store.root, "fused.zarr")
    fb.record({"time-0-16": "a", "time-16-32": "b", "time-32-48": "c"})
    run(cfg)
    caplog.clear()
    with caplog.at_level("INFO", logger="sm1km.stages.downscale"):
        d, a = run(cfg)
    assert d.stats["shards_written"] == 0 and "digesting fused.zarr" not in caplog.text

    _revise_fused_day(cfg, 20)
    fb.record({"time-16-32": "b-revised"})  # what fuse records for the block it recomputed
    caplog.clear()
    with caplog.at_level("INFO", logger="sm1km.stages.downscale"):
        d, a = run(cfg)
    assert "digesting fused.zarr for 16 day(s) (2020-01-17 .. 2020-02-01)" in caplog.text
    assert d.stats["blocks_redone"] == 1 and d.stats["shards_written"] == 4
    assert a.stats["months_redone"] == 1  # January only: February's days did not change

    # growth: the open fused block gets a new digest -> only its days are read again
    cfg37 = with_days(cfg40, 37)
    fb.record({"time-32-48": "c-grown"})
    caplog.clear()
    with caplog.at_level("INFO", logger="sm1km.stages.downscale"):
        d, a = run(cfg37)
    assert "digesting fused.zarr for 5 day(s) (2020-02-02 .. 2020-02-06)" in caplog.text
    assert d.stats["days_added"] == 1 and d.stats["blocks_redone"] == 1
    assert a.stats["months_redone"] == 1  # February


def test_master_from_before_deps_is_adopted_not_recomputed(tmp_path):
    """A master written before deps were recorded (markers without "deps", no blocks.json/days.json)
    is trusted once for the model its markers name: nothing is recomputed, the record is written."""
    import json

    cfg40, _ = make_world(str(tmp_path / "run"))
    cfg = with_days(cfg40, 36)
    run(cfg)
    ledger = store.Ledger(cfg.store.root, master.MASTER_STORE)
    for k in ledger.keys():
        path = ledger._key_path(k)
        if k.startswith("lat-"):
            info = json.loads(ledger.fs.cat_file(path))
            info.pop("deps")
            ledger.fs.pipe_file(path, json.dumps(info).encode())
        else:
            ledger.fs.rm(path)  # blocks.json, days.json, fused-days.json
    sums = store.checksum_tree(cfg.store.url(master.MASTER_STORE))
    d = downscale.downscale(cfg)
    assert d.stats["shards_written"] == 0 and d.stats["shards_skipped"] == 12
    assert store.checksum_tree(cfg.store.url(master.MASTER_STORE)) == sums
    assert ledger.fs.exists(posixpath.join(ledger.path, "blocks.json"))
    # a marker naming another model is not trusted
    k = sorted(x for x in ledger.keys() if x.startswith("lat-"))[0]
    ledger.fs.rm(posixpath.join(ledger.path, "blocks.json"))
    ledger.mark(k, {"land_pixel_days": 1, "model_sha256": "0" * 64})
    assert downscale.downscale(cfg).stats["shards_written"] == 1
