"""``sm1km`` — its real command line (:func:`sm1km.cli.main`) — with ``train`` and ``validate`` sized for
the tiny test worlds: the stage table of :mod:`sm1km.pipeline` runs them with
``sm1km.testing.worlds.TINY_OPTIONS`` (a small single-threaded GBT, no withheld experiment), as the
in-process tests do. Everything else (argument parsing, the run lock, :class:`~sm1km.pipeline.Pipeline`
``run``/``update``, the dask client from the config) is the shipped code path.

Used by the crash tests that SIGKILL whole ``run``/``update`` drivers many times: the default model
(250-tree RF and 600-round GBT, cross-validated) costs about a minute per (re)start of ``train``.

    python tests/tiny_driver.py -v run --config run.yaml
"""

from __future__ import annotations

import functools
import sys

from sm1km import pipeline
from sm1km.testing.worlds import TINY_OPTIONS

for _name in ("train", "validate"):
    pipeline.STAGES[_name] = functools.partial(pipeline.STAGES[_name], **TINY_OPTIONS[_name])

if __name__ == "__main__":
    from sm1km.cli import main

    sys.exit(main())
