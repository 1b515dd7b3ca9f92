"""Tier 3, how work runs: the one bounded task runner (``runner``), the work unit keyed by region and
time block (``units``), per-worker caches (``caches``), the stage result type (``result``), the dask
client / cluster factory (``client``, ``cluster``) and the Kubernetes DaskCluster spec (``kube``).
"""
