"""``sm1km bench --preset small|medium --out bench.json``: run the benchmarks, write JSON, print a summary.

The benchmark code lives in :mod:`sm1km.benchmarking` (so it works from an installed package);
``benchmarks/run_bench.py`` is a thin script around it. See docs/performance.md.
"""

from __future__ import annotations

import logging
import sys


def add_arguments(p) -> None:
    from .benchmarking import PRESETS, SECTIONS

    p.add_argument("--preset", default="small", choices=sorted(PRESETS),
                   help="size: tiny (seconds, for tests), small (< ~10 min on 2 cores), medium")
    p.add_argument("--out", default="bench.json", help="result JSON (default: bench.json)")
    p.add_argument("--reps", type=int, default=3, help="repetitions per figure; the median is reported (default 3)")
    p.add_argument("--workdir", default=None,
                   help="folder for the world and stores (kept; an identical world in it is reused). "
                        "Default: a temporary folder, removed at the end")
    p.add_argument("--keep", action="store_true", help="keep the temporary workdir")
    p.add_argument("--skip", default="", help=f"comma-separated sections to leave out ({','.join(SECTIONS)})")


def run_cli(args) -> int:
    from .benchmarking import errors, run_bench, summary_lines

    logging.getLogger("sm1km").setLevel(logging.INFO)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    if args.reps < 3:
        logging.getLogger(__name__).warning("--reps %d: figures are specified as the median of >= 3 repetitions",
                                            args.reps)
    skip = [s.strip() for s in args.skip.split(",") if s.strip()]
    res = run_bench(args.preset, args.out, workdir=args.workdir, reps=args.reps, keep=args.keep, skip=skip)
    print("\n".join(summary_lines(res)))
    print(f"written: {args.out}")
    return 1 if errors(res) else 0
