"""Tier 5, how good is it: the withheld-CCI fusion experiment, truth metrics (synthetic world), station
metrics, the HTML report, and ``verify`` (a store against the conventions). Reads what the stages wrote.
"""
