"""``sm1km ingest --config run.yaml``: raw inputs into the Zarr cubes and the station table.

Calls :func:`sm1km.stages.ingest.ingest` under the store's run lock; prints ``{store: url}`` as JSON.
"""

from __future__ import annotations

import logging
import sys

from sm1km.cli._common import add_config_argument, load_config, locked_cli, with_lock_arguments

log = logging.getLogger("sm1km.stages.ingest")  # the stage's logger: these lines are the stage's report


@with_lock_arguments
def add_arguments(p) -> None:
    add_config_argument(p)
    p.add_argument("--overwrite", action="store_true",
                   help="replace stored days whose input differs (default: such a day is an error)")


@locked_cli("ingest")
def run(args) -> int:
    import json

    from sm1km.stages.ingest import ingest

    cfg = load_config(args)
    urls = ingest(cfg, overwrite=args.overwrite)
    for name, url in urls.items():
        log.info("%s -> %s", name, url)
    sys.stdout.write(json.dumps(urls, indent=2) + "\n")
    return 0
