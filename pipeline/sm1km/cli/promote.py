"""``sm1km promote --config run.yaml --to PREFIX``: make this run the published version under PREFIX.

A full reprocessing is written as a new run root next to the published one (e.g.
``PREFIX/runs/v2``, its own ``store.root``); ``promote`` checks its stores, writes the STAC catalog
to ``PREFIX/catalog`` and then switches ``PREFIX/published.json`` to it in one atomic write
(:func:`sm1km.stages.publish.promote`): readers that follow the pointer see the old version or the
new one, never a mix; readers holding the old version's URLs keep reading it. Promoting the version
that is already published is a no-op. Holds the run lock of the version's root and of PREFIX.
Prints the pointer document (and the counters) as JSON.
"""

from __future__ import annotations

from sm1km.cli._common import add_config_argument, load_config, locked_cli, with_lock_arguments


@with_lock_arguments
def add_arguments(p) -> None:
    add_config_argument(p)
    p.add_argument("--to", dest="public_url", required=True, metavar="PREFIX",
                   help="the stable public prefix (path or s3:// URL) that must contain store.root; "
                        "readers open PREFIX/published.json")
    p.add_argument("--version", default=None, help="name of the version in published.json (default: the config's name)")
    p.add_argument("--products", default=None,
                   help="comma-separated products to publish (default: fused,master,monthly, those that exist)")
    p.add_argument("--no-catalog", action="store_true", help="do not write PREFIX/catalog")


@locked_cli("promote")
def run(args) -> int:
    import contextlib
    import json

    from sm1km.stages.publish import promote
    from sm1km.storage.lock import StoreLock, lock_url
    from sm1km.storage.publish import PRODUCT_STORES

    cfg = load_config(args)
    products = tuple(s.strip() for s in args.products.split(",") if s.strip()) if args.products else tuple(PRODUCT_STORES)
    unknown = [p for p in products if p not in PRODUCT_STORES]
    if unknown:
        from sm1km.errors import ConfigError

        raise ConfigError("--products", f"unknown product(s) {unknown}.", f"choose from {', '.join(PRODUCT_STORES)}.")
    with contextlib.ExitStack() as stack:
        if lock_url(args.public_url) != lock_url(cfg.store.root):  # one promote at a time per prefix
            stack.enter_context(StoreLock(args.public_url, cfg.store.storage_options(), stage="promote"))
        out = promote(cfg, args.public_url, products=products, catalog=not args.no_catalog, version=args.version)
    print(json.dumps({**out, "stats": out.stats}, indent=2))
    return 0
