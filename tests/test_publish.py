"""Updating published stores while scientists read them over HTTP (sm1km.storage.publish, sm1km.storage.append).

* appending days: invisible until ``store.finalize``; the partly filled last shard is rewritten
  prefix-preserving, so a reader holding the old shard index still reads the old bytes — shown
  deterministically (a reader paused between index and chunk request) and under a concurrent
  reader thread;
* reprocessing: a complete new version + one atomic pointer switch (``promote``): readers see
  version 1 or version 2 of the whole array, never a mix.

Stores are made with the master's real template and write path (``master.master_template``,
``master.write_packed``, ``store.finalize``).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time

import numpy as np
import pandas as pd
import pytest
import requests
import xarray as xr
import zarr
from zarr.abc.store import SuffixByteRequest
from zarr.storage import FsspecStore, WrapperStore

from downscale_world import make_config
from http_server import RangeHTTPServer
from sm1km.core.encoding import FILL
from sm1km.errors import StoreError
from sm1km.stages import downscale
from sm1km.stages import publish as publish_stage
from sm1km.storage import append, master, publish, shard_codec, store

pytestmark = pytest.mark.network

PUBLISH_INNER = {"inner_days": 16, "inner_cells": 1}
N0 = 40            # days written first (2020-01-01 .. 2020-02-09); blocks of 16 days: the last is partial
N_MAX = 88
PIX = (12, 15)     # a pixel in inner chunk (1, 1) of its shard: its bytes are not at offset 0


def packed_truth(n_days: int = N_MAX, seed: int = 0, offset: int = 0) -> np.ndarray:
    """Known int16 values (t, 20, 20) with a sea corner (fill); ``offset`` makes another version."""
    rng = np.random.default_rng(seed)
    q = (rng.integers(50, 450, size=(n_days, 20, 20)) + offset).astype(np.int16)
    q[:, 14:, :4] = FILL
    return q


def decoded(q: np.ndarray) -> np.ndarray:
    return np.where(q == FILL, np.nan, q * 0.001)


def make_master(root: str, so=None, q=None, name: str = "sm1km-run", pause_s: float = 0.0, inner=None):
    """A finalized master of the first N0 days, written shard by shard with the stage code."""
    # the inner chunk is pinned to (16 d, 10, 10) = 4 chunks per (16 d, 20, 20) shard: these tests are
    # about where chunks sit inside a rewritten shard (the default 2-day inner chunks are tested too)
    cfg = make_config(root, so, tile_cells=2, **(PUBLISH_INNER if inner is None else inner)).model_copy(
        update={"name": name})
    q = packed_truth() if q is None else q
    url = cfg.store.url(master.MASTER_STORE)
    tpl, enc = master.master_template(cfg)
    store.create_template(url, tpl, enc, cfg.store.storage_options())
    for spec in downscale.shard_specs(cfg):
        y, x = spec.fine
        master.write_packed(url, spec.region, {"sm": q[spec.t0:spec.t1, y, x]}, cfg.store.storage_options())
        time.sleep(pause_s)
    store.finalize(url, cfg.store.storage_options(), store.coverage_attrs(cfg.dates()))
    return cfg, url


def append_blocks(n_old: int, n_new: int, q: np.ndarray, block: int = 16):
    """(region, arrays) per touched shard for days [n_old, n_new) — one writing task each."""
    for b0 in range(n_old // block * block, n_new, block):
        t0, t1 = max(b0, n_old), min(b0 + block, n_new)
        yield {"time": slice(t0, t1), "lat": slice(0, 20), "lon": slice(0, 20)}, {"sm": q[t0:t1]}


def plain_rewrite(url, region, arrays, so=None):
    """A plain zarr region write (zarr re-packs the shard compactly) on the store's current shape."""
    g = zarr.open_group(url, mode="r+", use_consolidated=False)
    for name, data in arrays.items():
        g[name][tuple(region.get(d, slice(None)) for d in ("time", "lat", "lon"))] = data


def new_days(n_old: int, n_new: int) -> pd.DatetimeIndex:
    return pd.date_range("2020-01-01", periods=n_new, freq="D")[n_old:]


# --------------------------------------------------------------------------------------------
# pure shard composition
# --------------------------------------------------------------------------------------------
def test_preserve_prefix_keeps_old_chunks_where_the_old_index_points(tmp_path):
    cfg, url = make_master(str(tmp_path))
    key = "sm/c/2/0/0"  # the partly filled last time block
    old = (tmp_path / "master.zarr" / key).read_bytes()
    append.extend_time(url, new_days(N0, 44))
    q = packed_truth()
    plain_rewrite(url, {"time": slice(40, 44)}, {"sm": q[40:44]})
    new = (tmp_path / "master.zarr" / key).read_bytes()
    out = append.preserve_prefix(old, new, 4)
    old_idx, out_idx = shard_codec.decode_index(old, 4), shard_codec.decode_index(out, 4)
    for (o, n) in old_idx:  # every old chunk is still there, byte for byte, at its old offset
        assert out[o:o + n] == old[o:o + n]
    assert not np.array_equal(old_idx, out_idx)  # the chunks changed: new copies behind the old data
    (tmp_path / "master.zarr" / key).write_bytes(out)
    np.testing.assert_array_equal(zarr.open_group(url, mode="r", use_consolidated=False)["sm"][:44], q[:44])
    assert append.preserve_prefix(None, new, 4) == new
    assert append.preserve_prefix(out, out, 4) == out  # nothing changed: same bytes
    empty = append.preserve_prefix(old, None, 4)  # every chunk now fill: old bytes kept, index empty
    assert empty[: len(old) - 68] == old[:-68]
    assert (shard_codec.decode_index(empty, 4) == np.iinfo(np.uint64).max).all()


# --------------------------------------------------------------------------------------------
# appending days
# --------------------------------------------------------------------------------------------
def test_appended_days_are_invisible_until_finalize(store_root, moto_server):
    root, so = store_root
    cfg, url = make_master(root, so)
    q = packed_truth()
    if so:  # S3: read through the bucket's HTTP endpoint, anonymously (public-read policy)
        import boto3

        bucket = root.split("/")[2]
        boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1").put_bucket_policy(
            Bucket=bucket, Policy=json.dumps(publish.public_read_policy(bucket)))
        http_url, srv = f"{moto_server}/{bucket}/run/master.zarr", None
    else:
        srv = RangeHTTPServer(root).start()
        http_url = srv.url("master.zarr")
    try:
        root_json = publish.read_root_metadata(url, so)
        assert append.extend_time(url, new_days(N0, 70), so) == (N0, 70)
        assert append.extend_time(url, new_days(N0, 60), so) == (N0, 60)  # a re-run starts from what is published
        for region, arrays in append_blocks(N0, 60, q):
            append.write_packed_preserving(url, region, arrays, so)
        assert publish.read_root_metadata(url, so) == root_json  # readers' view untouched
        with pytest.raises(StoreError, match="out of date"):
            publish.check_published(url, so)
        ds = xr.open_zarr(http_url)
        assert ds.sizes["time"] == N0 and ds.attrs["time_coverage_end"] == "2020-02-09"
        np.testing.assert_array_equal(ds.sm.values, decoded(q[:N0]))
        store.finalize(url, so, store.coverage_attrs(pd.date_range("2020-01-01", periods=60)))
        ds = xr.open_zarr(http_url)
        assert ds.sizes["time"] == 60 and ds.attrs["time_coverage_end"] == "2020-02-29"
        np.testing.assert_array_equal(ds.sm.values, decoded(q[:60]))
        assert publish.check_published(url, so)["arrays"]["sm"] == [60, 20, 20]
        assert append.extend_time(url, new_days(N0, 60), so) == (60, 60)  # nothing new: untouched
    finally:
        if srv:
            srv.stop()


class PauseAfterIndex(WrapperStore):
    """Reader side of a race made deterministic: after fetching the index of shard ``key`` the
    reader waits while ``hook`` (the writer) runs, then fetches the chunk ranges."""

    def __init__(self, store, key, hook):
        super().__init__(store)
        self.key, self.hook = key, hook

    def _with_store(self, store):
        return type(self)(store, self.key, self.hook)

    async def get(self, key, prototype, byte_range=None):
        buf = await self._store.get(key, prototype, byte_range)
        if key == self.key and isinstance(byte_range, SuffixByteRequest) and self.hook is not None:
            hook, self.hook = self.hook, None
            await asyncio.to_thread(hook)
        return buf


def _read_across_a_rewrite(tmp_path, write, inner=None) -> np.ndarray:
    cfg, url = make_master(str(tmp_path), inner=inner)
    q = packed_truth()

    def writer():
        append.extend_time(url, new_days(N0, 44))
        write(url, {"time": slice(N0, 44), "lat": slice(0, 20), "lon": slice(0, 20)}, {"sm": q[N0:44]})

    with RangeHTTPServer(tmp_path) as srv:
        reader_store = PauseAfterIndex(FsspecStore.from_url(srv.url("master.zarr"), read_only=True),
                                       "sm/c/2/0/0", writer)
        ds = xr.open_zarr(reader_store, chunks=None)  # metadata of the 40-day state
        values = ds.sm.isel(lat=PIX[0], lon=PIX[1]).values
        assert reader_store.hook is None, "the writer did not run between index and chunk read"
    return values


@pytest.mark.parametrize("inner", [None, {}], ids=["16d-inner", "default-inner"])
def test_reader_between_index_and_chunk_reads_old_bytes_with_preserving_writer(tmp_path, inner):
    values = _read_across_a_rewrite(tmp_path, append.write_packed_preserving, inner)
    np.testing.assert_array_equal(values, decoded(packed_truth()[:N0, PIX[0], PIX[1]]))


def test_control_plain_rewrite_breaks_that_reader(tmp_path):
    """Why the preserving writer exists: a plain zarr rewrite of the shard moves its chunks, and a
    reader holding the old index reads bytes of the wrong place (an error or wrong values)."""
    try:
        values = _read_across_a_rewrite(tmp_path, plain_rewrite)
    except Exception:
        return
    assert not np.array_equal(values, decoded(packed_truth()[:N0, PIX[0], PIX[1]]), equal_nan=True)


def _wait_for(cond, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.01)


def _reader_loop(http_url, q, allowed, done, log, errors, hold_s=0.004):
    """Open, wait a moment (the writer may publish meanwhile), read a series and the last day;
    every read must equal the truth of the state that was opened."""
    while not done.is_set():
        try:
            ds = xr.open_zarr(http_url, chunks=None)
            n = ds.sizes["time"]
            assert n in allowed, n
            assert ds.attrs["time_coverage_end"] == str(pd.Timestamp(ds.time.values[-1]).date())
            time.sleep(hold_s)
            np.testing.assert_array_equal(ds.sm.isel(lat=PIX[0], lon=PIX[1]).values, decoded(q[:n, PIX[0], PIX[1]]))
            np.testing.assert_array_equal(ds.sm.isel(time=-1).values, decoded(q[n - 1]))
            np.testing.assert_array_equal(ds.sm.isel(time=slice(n - 9, n), lat=slice(5, 15)).values,
                                          decoded(q[n - 9:n, 5:15]))
            log.append(n)
        except Exception as exc:  # noqa: BLE001 - reported by the test
            errors.append(repr(exc))
            return


def test_appends_while_readers_read_over_http(tmp_path):
    cfg, url = make_master(str(tmp_path))
    q = packed_truth()
    steps = [N0, 43, 47, 48, 53, 64, 70, 81, N_MAX]  # inside a block, to a boundary, across two
    full_before = {k: (tmp_path / "master.zarr" / "sm" / k).read_bytes() for k in ("c/0/0/0", "c/1/0/0")}
    done, log, errors = threading.Event(), [], []
    # 10 ms per request (an object store's latency) leaves gaps between a reader's index and chunk
    # requests in which the writer replaces shards; a plain zarr rewrite fails here about every
    # other run (zstd errors), the deterministic test above shows it every time
    with RangeHTTPServer(tmp_path, latency_s=0.01) as srv:
        readers = [threading.Thread(target=_reader_loop, args=(srv.url("master.zarr"), q, set(steps), done, log,
                                                                errors, hold)) for hold in (0.0, 0.005, 0.03)]
        for r in readers:
            r.start()
        try:
            _wait_for(lambda: log.count(N0) >= 2 or errors)  # readers are reading the first state
            for n_old, n_new in zip(steps[:-1], steps[1:]):
                time.sleep(0.15)
                append.append_days(url, new_days(n_old, n_new), append_blocks(n_old, n_new, q))
            _wait_for(lambda: log.count(N_MAX) >= 2 or errors)
        finally:
            done.set()
            for r in readers:
                r.join(30)
    assert not errors, errors[:3]
    assert set(log) >= {N0, N_MAX} and len(set(log)) >= 3, sorted(set(log))
    ds = xr.open_zarr(str(tmp_path / "master.zarr"))
    np.testing.assert_array_equal(ds.sm.values, decoded(q))
    # complete shards are never rewritten by an append (only the partly filled last one)
    assert {k: (tmp_path / "master.zarr" / "sm" / k).read_bytes() for k in full_before} == full_before


# --------------------------------------------------------------------------------------------
# reprocessing: a new version and a pointer switch
# --------------------------------------------------------------------------------------------
def test_promote_switches_readers_from_one_complete_version_to_the_next(tmp_path):
    pub = tmp_path / "pub"
    q1, q2 = packed_truth(N0), packed_truth(N0, offset=100)
    cfg1, _ = make_master(str(pub / "runs" / "v1"), q=q1, name="v1")
    doc = publish_stage.promote(cfg1, str(pub))
    assert doc["products"]["master"]["href"] == "runs/v1/master.zarr"
    assert json.loads((pub / "published.json").read_text()) == dict(doc)  # the result is the pointer
    assert doc.stats["units_total"] == doc.stats["units_written"] == len(doc["products"])
    assert doc.stats["units_skipped"] == 0 and doc.stats["catalog"]["units_written"] > 0
    before = store.checksum_tree(str(pub / "runs" / "v1"))
    seen, errors, done = [], [], threading.Event()

    def reader(base):
        while not done.is_set():
            try:
                ptr = requests.get(f"{base}/published.json").json()
                v = xr.open_zarr(f"{base}/{ptr['products']['master']['href']}", chunks=None).sm.values
                if np.array_equal(v, decoded(q1), equal_nan=True):
                    seen.append(1)
                elif np.array_equal(v, decoded(q2), equal_nan=True):
                    seen.append(2)
                else:
                    raise AssertionError("a mix of versions")
            except Exception as exc:  # noqa: BLE001
                errors.append(repr(exc))
                return

    with RangeHTTPServer(pub) as srv:
        t = threading.Thread(target=reader, args=(srv.base_url,))
        t.start()
        try:
            _wait_for(lambda: seen or errors)  # a reader has read version 1
            cfg2, _ = make_master(str(pub / "runs" / "v2"), q=q2, name="v2", pause_s=0.02)  # while v1 is read
            n_before_switch = len(seen)
            publish_stage.promote(cfg2, str(pub))
            n_switch = len(seen)
            _wait_for(lambda: len(seen) >= n_switch + 2 or errors)  # the 2nd read from now began after the switch
        finally:
            done.set()
            t.join(30)
        assert not errors, errors[:3]
        assert 2 not in seen[:n_before_switch] and seen[-1] == 2 and 1 in seen
        assert publish.resolve(str(pub), "master") == str(pub / "runs" / "v2" / "master.zarr")
        assert publish.resolve(srv.base_url, "master") == f"{srv.base_url}/runs/v2/master.zarr"  # over HTTP
        # the STAC catalog at the stable place points at the new version and opens over HTTP
        import pystac

        coll = pystac.Collection.from_file(f"{srv.base_url}/catalog/collection.json")
        assert coll.assets["master"].get_absolute_href() == f"{srv.base_url}/runs/v2/master.zarr"
        href = coll.get_item("master").assets["zarr"].get_absolute_href()
        np.testing.assert_array_equal(xr.open_zarr(href).sm.values, decoded(q2))
    assert store.checksum_tree(str(pub / "runs" / "v1")) == before  # old version untouched


def test_promote_refuses_unfinished_or_outside_stores(tmp_path):
    cfg = make_config(str(tmp_path / "pub" / "runs" / "v1"), tile_cells=2)
    tpl, enc = master.master_template(cfg)
    store.create_template(cfg.store.url("master.zarr"), tpl, enc)  # no finalize: not publishable
    with pytest.raises(StoreError, match="no consolidated metadata"):
        publish_stage.promote(cfg, str(tmp_path / "pub"))
    assert not (tmp_path / "pub" / "published.json").exists()
    cfg_out, _ = make_master(str(tmp_path / "elsewhere"))
    from sm1km.errors import ConfigError

    with pytest.raises(ConfigError, match="not under the public prefix"):
        publish_stage.promote(cfg_out, str(tmp_path / "pub"))
    with pytest.raises(StoreError, match="nothing published"):
        publish.resolve(str(tmp_path / "pub"))


def test_promote_on_s3_reads_over_the_bucket_http_endpoint(s3_bucket, moto_server):
    import boto3
    import pystac

    bucket, so = s3_bucket
    q = packed_truth(N0)
    cfg, _ = make_master(f"s3://{bucket}/sm1km/runs/v1", so, q=q, name="v1")
    doc = publish_stage.promote(cfg, f"s3://{bucket}/sm1km")
    assert doc["products"]["master"]["href"] == "runs/v1/master.zarr" and doc["catalog"] == "catalog/collection.json"
    boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1").put_bucket_policy(
        Bucket=bucket, Policy=json.dumps(publish.public_read_policy(bucket, "sm1km")))
    base = f"{moto_server}/{bucket}/sm1km"
    url = publish.resolve(base, "master")
    assert url == f"{base}/runs/v1/master.zarr"
    np.testing.assert_array_equal(xr.open_zarr(url).sm.values, decoded(q))
    coll = pystac.Collection.from_file(f"{base}/catalog/collection.json")
    assert coll.get_item("master").assets["zarr"].get_absolute_href() == url


def test_promote_verb_switches_once_and_a_second_promote_is_a_no_op(tmp_path, capsys):
    from sm1km import cli
    from sm1km.storage.lock import StoreLock

    pub = tmp_path / "pub"
    q1, q2 = packed_truth(N0), packed_truth(N0, offset=100)
    yamls = {}
    for v, q in (("v1", q1), ("v2", q2)):
        cfg, _ = make_master(str(pub / "runs" / v), q=q, name=v)
        yamls[v] = tmp_path / f"{v}.yaml"
        yamls[v].write_text(cfg.to_yaml())
    assert cli.main(["promote", "--config", str(yamls["v1"]), "--to", str(pub)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["version"] == "v1" and out["stats"]["units_written"] == len(out["products"])
    pointer = pub / "published.json"
    stamp, raw = pointer.stat().st_mtime_ns, pointer.read_bytes()
    # the same version again: nothing switched, nothing rewritten (the catalog neither)
    assert cli.main(["promote", "--config", str(yamls["v1"]), "--to", str(pub)]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["stats"]["units_written"] == 0 and again["stats"]["catalog"]["units_written"] == 0
    assert pointer.stat().st_mtime_ns == stamp and pointer.read_bytes() == raw
    # another promote of the prefix is running: refused, the pointer unchanged
    with StoreLock(str(pub), stage="promote", heartbeat_s=60):
        assert cli.main(["promote", "--config", str(yamls["v2"]), "--to", str(pub)]) == 2
    assert "being written by another run" in capsys.readouterr().err
    assert pointer.read_bytes() == raw
    # the new version: one switch, readers resolve to it; the old version stays as it was
    assert cli.main(["promote", "--config", str(yamls["v2"]), "--to", str(pub), "--version", "2021-reprocessing"]) == 0
    doc = json.loads(pointer.read_text())
    assert doc["version"] == "2021-reprocessing" and doc["root"] == "runs/v2"
    np.testing.assert_array_equal(xr.open_zarr(publish.resolve(str(pub), "master")).sm.values, decoded(q2))
    np.testing.assert_array_equal(xr.open_zarr(str(pub / "runs" / "v1" / "master.zarr")).sm.values, decoded(q1))
    assert cli.main(["promote", "--config", str(yamls["v2"]), "--to", str(pub), "--products", "nope"]) == 2
