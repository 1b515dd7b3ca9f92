"""``sm1km catalog --config run.yaml``: write the STAC catalog, or publish the run under a public prefix.

Runs under the store's run lock (as every stage). ``--publish-to PREFIX`` is ``sm1km promote --to
PREFIX`` (:mod:`sm1km.cli.promote`).
"""

from __future__ import annotations

from sm1km.cli._common import add_config_argument, load_config, locked_cli, with_lock_arguments


@with_lock_arguments
def add_arguments(p) -> None:
    add_config_argument(p)
    p.add_argument("--base-url", default=None,
                   help="public URL of the store root (absolute links); default: relative links")
    p.add_argument("--out", default=None,
                   help="where to write the catalog (path or s3:// URL); default <store.root>/catalog")
    p.add_argument("--publish-to", default=None, metavar="PREFIX",
                   help="publish this run under a stable public prefix (which must contain store.root): "
                        "checks the stores, writes <PREFIX>/catalog and then <PREFIX>/published.json")


@locked_cli("catalog")
def run(args) -> int:
    import json

    from sm1km.stages.catalog import catalog
    from sm1km.stages.publish import promote

    cfg = load_config(args)
    if args.publish_to:
        out = promote(cfg, args.publish_to)
    else:
        out = catalog(cfg, base_url=args.base_url, out_url=args.out)
    print(json.dumps(out, indent=2))
    return 0
