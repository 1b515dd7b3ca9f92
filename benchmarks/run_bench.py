"""Run the sm1km benchmarks (same as ``sm1km bench``) and write the JSON under benchmarks/results/.

    python benchmarks/run_bench.py --preset small --out benchmarks/results/bench_small.json

The harness is ``benchmarks/harness/`` (not part of the installed package); see docs/performance.md for what each figure
means and how the committed results were produced.
"""

from __future__ import annotations

import sys

from sm1km.cli import main

if __name__ == "__main__":
    argv = sys.argv[1:]
    if not any(a == "--out" or a.startswith("--out=") for a in argv):
        preset = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--preset"), "small")
        argv += ["--out", f"benchmarks/results/bench_{preset}.json"]
    sys.exit(main(["bench", *argv]))
