"""``sm1km config``: print a commented example config, or validate one."""

from __future__ import annotations

import sys


def add_arguments(p) -> None:
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--example", action="store_true", help="print a commented example config")
    g.add_argument("--check", metavar="RUN_YAML", help="validate a config file and print it resolved")


def run(args) -> int:
    from sm1km.config import EXAMPLE_CONFIG, RunConfig

    if args.example:
        sys.stdout.write(EXAMPLE_CONFIG)
        return 0
    import yaml

    cfg = RunConfig.from_yaml(args.check)
    sys.stdout.write(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    return 0
