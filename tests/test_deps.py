"""storage/deps: block digests and unit freshness (local and S3)."""

from __future__ import annotations

from sm1km.storage import store
from sm1km.storage.deps import (
    BlockDigests,
    digest_of,
    input_day_digests,
    input_static_digest,
    unit_fresh,
    units_to_do,
)


def test_digest_is_canonical():
    assert digest_of({"a": 1, "b": [1, 2]}) == digest_of({"b": [1, 2], "a": 1})
    assert digest_of({"a": 1}) != digest_of({"a": 2})
    assert len(digest_of([])) == 64


def test_block_digests_record_and_stale(store_root):
    root, so = store_root
    blocks = BlockDigests(root, "fused.zarr", so)
    assert blocks.read() == {}
    cur = {"time-0-128": digest_of(["a"]), "time-128-256": digest_of(["b"])}
    assert blocks.stale(cur) == list(cur)
    blocks.record({"time-0-128": cur["time-0-128"]})
    assert blocks.stale(cur) == ["time-128-256"]
    blocks.record({"time-128-256": cur["time-128-256"]})
    assert blocks.stale(cur) == []
    cur["time-0-128"] = digest_of(["a", "revised"])
    assert blocks.stale(cur) == ["time-0-128"]
    blocks.clear()
    assert blocks.read() == {}


def test_units_to_do(tmp_path):
    root = str(tmp_path / "run")
    ledger = store.Ledger(root, "master.zarr")
    ledger.mark("u1", {"deps": "x"})
    ledger.mark("u2", {"deps": "y"})
    assert units_to_do(ledger, ["u1", "u2", "u3"], "x") == ["u2", "u3"]
    assert unit_fresh({"deps": "x"}, "x") and not unit_fresh(None, "x") and not unit_fresh({}, "x")


def test_input_day_digests(tmp_path):
    root = str(tmp_path / "run")
    assert input_day_digests(root, "inputs/cci.zarr") == {}
    store.write_json(store.join(root, "_ledger", "inputs/cci.zarr", "ingest-index.json"),
                     {"stored_days": {"2020-04-01": "ab"}, "stored_static": "cd"})
    assert input_day_digests(root, "inputs/cci.zarr") == {"2020-04-01": "ab"}
    assert input_static_digest(root, "inputs/cci.zarr") == "cd"
    assert input_static_digest(root, "inputs/era5.zarr") == ""
