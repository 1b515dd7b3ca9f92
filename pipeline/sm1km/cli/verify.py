"""``sm1km verify``: check a run (``--config run.yaml``) or stores (``URL...``) against the conventions.

``--config``: :func:`sm1km.validation.verify.verify_run` checks the run's product stores (conventions,
ledger, shards, deps records), its exports (manifest, digests, COG/HDF5 validity) and its catalog;
prints one JSON report (checks run, passed, failed with the object named) and, when something
failed, one paragraph per problem on stderr. ``URL...``: :func:`sm1km.validation.verify.verify_store`
per URL, one JSON report per line (as before). Exit 2 when anything has a problem.
"""

from __future__ import annotations

from sm1km.cli._common import add_config_argument


def add_arguments(p) -> None:
    p.add_argument("urls", nargs="*", metavar="URL", help="store URL(s) (path or s3://); or use --config")
    add_config_argument(p, required=False)
    p.add_argument("--endpoint-url", default=None, help="S3 endpoint for s3:// URLs")
    p.add_argument("--anon", action="store_true", help="anonymous S3 access")
    p.add_argument("--no-chunks", action="store_true",
                   help="skip the chunk-object checks (ledger completeness, shard integrity)")


def run(args) -> int:
    import json
    import sys

    from sm1km.errors import ConfigError
    from sm1km.validation.verify import verify_run, verify_store

    if not args.urls and not args.config:
        raise ConfigError("sm1km verify", "nothing to check.", "pass --config run.yaml (a whole run) or store URL(s).")
    ok = True
    if args.config:
        from sm1km.cli._common import load_config

        rep = verify_run(load_config(args), check_chunks=not args.no_chunks)
        print(json.dumps(rep.as_dict(), indent=1))
        for para in rep.paragraphs():
            print(f"sm1km verify: {para}", file=sys.stderr)
        ok &= rep.ok
    for url in args.urls:
        so = {}
        if url.startswith("s3://"):
            so = {"anon": args.anon}
            if args.endpoint_url:
                so["endpoint_url"] = args.endpoint_url
        srep = verify_store(url, so, check_chunks=not args.no_chunks)
        print(json.dumps(srep.as_dict()))
        ok &= srep.ok
    return 0 if ok else 2
