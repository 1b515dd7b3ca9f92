"""Tier 4, the stages: thin wiring plan -> runtime -> core -> storage, one module (or package) per stage.

Every stage is ``stage(cfg, client=None, **options) -> StageResult`` and is idempotent: a re-run
skips finished units and gives byte-identical stores (the contract ``sm1km.testing.contract``
checks for each of them).
"""
