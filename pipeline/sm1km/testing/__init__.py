"""Test support shipped with the package (the tier beside ``cli``; it may import every other tier).

* :mod:`sm1km.testing.worlds` — the tiny synthetic worlds the tests run on, and a finished run of
  every stage cached per session;
* :mod:`sm1km.testing.trees` — object trees of a store root (snapshot, compare, put back, write stamps);
* :mod:`sm1km.testing.contract` — :class:`~sm1km.testing.contract.StageContractTests`, the stage
  contract as one suite, subclassed per stage (like zarr-python's ``StoreTests`` per store).

Needs the test extra (pytest, moto); nothing in the pipeline imports it.
"""
