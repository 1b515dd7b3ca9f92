"""Before/after of a hot-path change: ``downscale.predict_shard`` of a git ref vs the working tree.

Runs ``read_inputs`` + ``predict_shard`` of both versions on every shard of a run config (same
stores, same model, one process, one thread), checks that the packed int16 output is identical,
and prints the CPU seconds of each (median of ``--reps``) as JSON.

    python benchmarks/compare_downscale.py --config WORLD/run.yaml --ref 8a3dcbe~1

(``WORLD`` e.g. the ``world/`` folder of ``sm1km bench --workdir DIR``, after a bench run.)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def load_old_downscale(ref: str):
    """The downscale stage module at ``ref`` (relative imports made absolute).

    Its imports resolve against the installed package, so ``ref`` must have the same module layout:
    ``stages/downscale.py`` from the tiered package (issue [12]) on; the flat ``downscale.py`` of
    earlier refs imports modules that no longer exist (use a checkout of that ref instead).
    """
    repo = Path(__file__).resolve().parents[1]
    src = subprocess.run(["git", "show", f"{ref}:pipeline/sm1km/stages/downscale.py"], cwd=repo, check=True,
                         capture_output=True, text=True).stdout
    src = re.sub(r"from \.(\w*) import", lambda m: f"from sm1km{'.' + m.group(1) if m.group(1) else ''} import", src)
    path = Path(tempfile.mkdtemp()) / "downscale_old.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("downscale_old", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["downscale_old"] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def main(argv=None) -> int:
    import numpy as np

    from sm1km.config import RunConfig
    from sm1km.core.encoding import encode_int16
    from sm1km.stages import downscale as new
    from sm1km.storage.model import load_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--ref", required=True, help="git ref of the 'before' version")
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args(argv)
    old = load_old_downscale(a.ref)
    cfg = RunConfig.from_yaml(a.config)
    model = load_model(cfg.model_path, n_threads=1)
    ctx = new.make_context(cfg, model)
    specs = list(new.shard_specs(cfg))

    def run(mod):
        """CPU seconds of read_inputs + predict_shard over all shards, and the packed outputs."""
        t = 0.0
        outs = []
        for s in specs:
            c = time.process_time()
            sm, unc = mod.predict_shard(*mod.read_inputs(s, ctx), s.factor, model, model.has_uncertainty)
            t += time.process_time() - c
            outs.append((encode_int16(sm), None if unc is None else encode_int16(unc)))
        return t, outs

    t_old, t_new = [], []
    for _ in range(max(1, a.reps)):
        to, oo = run(old)
        tn, on = run(new)
        t_old.append(to)
        t_new.append(tn)
    identical = all(np.array_equal(x[0], y[0]) and (x[1] is None or np.array_equal(x[1], y[1]))
                    for x, y in zip(oo, on))
    pd_total = sum((s.t1 - s.t0) * (s.r1 - s.r0) * (s.c1 - s.c0) * s.factor ** 2 for s in specs)
    res = {"config": a.config, "ref": a.ref, "shards": len(specs), "pixel_days": pd_total, "identical_output": identical,
           "cpu_s_before": round(statistics.median(t_old), 3), "cpu_s_after": round(statistics.median(t_new), 3),
           "speedup": round(statistics.median(t_old) / statistics.median(t_new), 3),
           "reps_before": [round(v, 3) for v in t_old], "reps_after": [round(v, 3) for v in t_new]}
    print(json.dumps(res, indent=1))
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
