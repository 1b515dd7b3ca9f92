"""``sm1km.storage.shard_reads``: the same values as zarr alone, fewer requests (counted by a
Range-honouring HTTP server on 127.0.0.1); no timing asserted."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from http_server import RangeHTTPServer
from sm1km.storage.shard_reads import coalesce, concurrent_shard_reads, upstream_coalesces


def test_coalesce_groups_near_ranges_within_the_size_limit():
    ranges = [(100, 110, "c"), (0, 10, "a"), (12, 20, "b"), (300, 400, "d")]
    assert coalesce(ranges, max_gap=5, max_size=1000) == [
        (0, 20, [(0, 10, "a"), (12, 20, "b")]), (100, 110, [(100, 110, "c")]), (300, 400, [(300, 400, "d")])]
    assert len(coalesce(ranges, max_gap=1000, max_size=1000)) == 1
    assert len(coalesce(ranges, max_gap=1000, max_size=50)) == 3  # (0..20) + (100..110) = 110 > 50
    assert coalesce(ranges, max_gap=0, max_size=1 << 30) == [(a, b, [(a, b, t)]) for a, b, t in sorted(ranges)]
    assert coalesce([], 10, 10) == []


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    """An int16 array like the master's ``sm``: (300 d, 120, 120), shards (128, 120, 120), inner (2, 60, 60)."""
    root = tmp_path_factory.mktemp("shards")
    z = zarr.create_array(str(root / "a.zarr"), shape=(300, 120, 120), dtype="int16", shards=(128, 120, 120),
                          chunks=(2, 60, 60), fill_value=-32768)
    rng = np.random.default_rng(0)
    data = rng.integers(0, 500, size=(300, 120, 120), dtype=np.int16)
    data[:, :10, :10] = -32768  # never written: fill
    z[:] = data
    return root, data


@pytest.mark.network
@pytest.mark.skipif(upstream_coalesces(), reason="the installed zarr reads shards concurrently itself")
def test_point_series_same_values_two_requests_per_shard(sharded):
    root, data = sharded
    with RangeHTTPServer(root) as srv:
        a = zarr.open_array(srv.url("a.zarr"), mode="r")
        srv.reset()
        plain = a[:, 70, 33]
        n_plain = srv.totals()["range_requests"]
        with concurrent_shard_reads() as active:
            srv.reset()
            fast = a[:, 70, 33]
            n_fast = srv.totals()["range_requests"]
            region = a[5:250, 3:90, 50:61]
            fill = a[:, 2, 2]
        srv.reset()
        with concurrent_shard_reads(max_gap_bytes=0):
            each = a[:, 70, 33]
        n_each = srv.totals()["range_requests"]
        after = a[:, 70, 33]  # outside the block: zarr alone again
    assert active
    np.testing.assert_array_equal(plain, data[:, 70, 33])
    np.testing.assert_array_equal(fast, plain)
    np.testing.assert_array_equal(each, plain)
    np.testing.assert_array_equal(after, plain)
    np.testing.assert_array_equal(region, data[5:250, 3:90, 50:61])
    np.testing.assert_array_equal(fill, data[:, 2, 2])
    # zarr alone: per shard the index + one range per inner chunk (64, 64, 22 of 2 days)
    assert n_plain == 3 + 64 + 64 + 22
    # not coalesced: the same ranges (fetched concurrently)
    assert n_each == n_plain
    # coalesced: the point's chunks of a shard lie within 64 kB of each other -> index + one range per shard
    assert n_fast == 3 * 2
