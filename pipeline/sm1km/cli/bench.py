"""``sm1km bench --preset small|medium --out bench.json``: run the benchmarks, write JSON, print a summary.

The benchmark harness lives in the source checkout, ``benchmarks/harness/`` (a developer tool: it is
not part of the installed package); this verb finds it next to the package source (an editable
install from a clone) or under ``$SM1KM_BENCHMARKS``. ``benchmarks/run_bench.py`` is a thin script
around it. See docs/performance.md.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys

from sm1km.errors import ConfigError


def benchmarks_dir():
    """The folder (a ``pathlib.Path``) holding ``harness/``: ``$SM1KM_BENCHMARKS``, else ``<clone>/benchmarks``;
    None if absent."""
    import pathlib  # here, not at the top: ``sm1km --version`` imports this module

    env = os.environ.get("SM1KM_BENCHMARKS")
    candidates = [pathlib.Path(env)] if env else []
    candidates.append(pathlib.Path(__file__).resolve().parents[3] / "benchmarks")
    for c in candidates:
        if (c / "harness" / "__init__.py").is_file():
            return c
    return None


def load_harness():
    """Import ``harness`` from the source checkout (ConfigError with the fix when it is not there)."""
    where = benchmarks_dir()
    if where is None:
        raise ConfigError("sm1km bench", "the benchmark harness (benchmarks/harness/) is not next to this installation.",
                          "run it from a clone (`make install` there), or set SM1KM_BENCHMARKS to the clone's "
                          "benchmarks/ folder.")
    if str(where) not in sys.path:
        sys.path.insert(0, str(where))
    return importlib.import_module("harness")


def add_arguments(p) -> None:
    harness = load_harness()
    PRESETS, SECTIONS = harness.PRESETS, harness.SECTIONS

    p.add_argument("--preset", default="small", choices=sorted(PRESETS),
                   help="size: tiny (seconds, for tests), small (< ~10 min on 2 cores), medium")
    p.add_argument("--out", default="bench.json", help="result JSON (default: bench.json)")
    p.add_argument("--reps", type=int, default=3, help="repetitions per figure; the median is reported (default 3)")
    p.add_argument("--workdir", default=None,
                   help="folder for the world and stores (kept; an identical world in it is reused). "
                        "Default: a temporary folder, removed at the end")
    p.add_argument("--keep", action="store_true", help="keep the temporary workdir")
    p.add_argument("--skip", default="", help=f"comma-separated sections to leave out ({','.join(SECTIONS)})")


def run(args) -> int:
    harness = load_harness()
    errors, run_bench, summary_lines = harness.errors, harness.run_bench, harness.summary_lines

    from sm1km.cli._common import chatty, log_level

    logging.getLogger("sm1km").setLevel(log_level(args))
    if not logging.getLogger().handlers:
        logging.basicConfig(level=log_level(args), stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    if args.reps < 3:
        logging.getLogger(__name__).warning("--reps %d: figures are specified as the median of >= 3 repetitions",
                                            args.reps)
    skip = [s.strip() for s in args.skip.split(",") if s.strip()]
    res = run_bench(args.preset, args.out, workdir=args.workdir, reps=args.reps, keep=args.keep, skip=skip)
    if chatty(args):
        print("\n".join(summary_lines(res)))
        print(f"written: {args.out}")
    return 1 if errors(res) else 0
