"""Tier 1, the science: pure numpy/xarray functions on in-memory arrays, unit-tested with known answers.

Grid arithmetic (``grid``), int16 encoding (``encoding``), fusion formulas (``fusion``), gap-filling
(``gapfill``), the feature builder shared by training and inference (``features``), prediction
helpers (``predict``), metric formulas and mergeable moments (``metrics``), CV splitters (``cv``) and
the ingest chunk planner (``rechunk_plan``). No I/O, no dask: ``tests/test_architecture.py`` allows
only the standard library, numpy, pandas, scipy and xarray here.
"""
