"""``sm1km verify URL...``: check stores against the conventions (CF, encoding, coverage, ledger).

Calls :func:`sm1km.validation.verify.verify_store` per URL; prints one JSON report per line; exit 2
when any store has a problem.
"""

from __future__ import annotations


def add_arguments(p) -> None:
    p.add_argument("urls", nargs="+", metavar="URL", help="store URL(s) (path or s3://)")
    p.add_argument("--endpoint-url", default=None, help="S3 endpoint for s3:// URLs")
    p.add_argument("--anon", action="store_true", help="anonymous S3 access")
    p.add_argument("--no-chunks", action="store_true", help="skip the chunk-object completeness check")


def run(args) -> int:
    import json

    from sm1km.validation.verify import verify_store

    ok = True
    for url in args.urls:
        so = {}
        if url.startswith("s3://"):
            so = {"anon": args.anon}
            if args.endpoint_url:
                so["endpoint_url"] = args.endpoint_url
        rep = verify_store(url, so, check_chunks=not args.no_chunks)
        print(json.dumps(rep.as_dict()))
        ok &= rep.ok
    return 0 if ok else 2
