"""``sm1km validate --config run.yaml``: metrics against stations and truth, and the HTML report.

Calls :func:`sm1km.validation.validate.validate`; prints where the report is and the headline numbers.
"""

from __future__ import annotations

from sm1km.cli._common import add_config_argument, load_config


def add_arguments(p) -> None:
    add_config_argument(p)
    p.add_argument("--no-withheld", action="store_true", help="skip the withheld-observation fusion experiment")


def run(args) -> int:
    from sm1km.storage.metrics_json import read_metrics_json
    from sm1km.validation.validate import headline, validate

    cfg = load_config(args)
    out = validate(cfg, run_withheld=not args.no_withheld)
    m = read_metrics_json(cfg)
    print(f"report: {out['report']}")
    print(headline(m))
    return 0
