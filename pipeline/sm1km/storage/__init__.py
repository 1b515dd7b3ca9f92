"""Tier 2, bytes in and out: Zarr stores on any fsspec URL, the ledger, the master layout and its
whole-shard codec, appends and reader checks (``publish``), the run lock, model files, ``metrics.json``
and the readers of every input format (``readers/``). May import ``core``; never dask or a stage.
"""
