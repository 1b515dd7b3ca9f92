"""Write the bad-input corpus to a folder, one damaged copy of the tiny world per case.

    .venv/bin/python tests/data/bad/make_bad.py OUT_DIR [CASE ...]

Then try a case by hand, e.g. ``sm1km ingest --config OUT_DIR/cci-truncated/run.yaml`` (exit code 2
and one paragraph naming the file, the problem and the fix). Cases that need a model get one; the
S3 cases need a moto/MinIO endpoint and are skipped here. The corpus itself is defined in
``tests/bad_inputs.py`` (nothing binary is committed).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests/

import bad_inputs as B  # noqa: E402


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    out = Path(argv[0])
    wanted = set(argv[1:])
    base = out / "_world"
    if not (base / "run.yaml").exists():
        from sm1km.cli import main as cli
        from sm1km.config import RunConfig

        w = B.write_tiny_world(base)
        for stage in ("ingest", "fuse"):
            if cli([stage, "--config", str(w.run_yaml)]) != 0:
                return 1
        B.train_fake_model(RunConfig.from_yaml(w.run_yaml))
    for case in B.CASES:
        if (wanted and case.name not in wanted) or case.needs == "s3":
            continue
        dst = out / case.name
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(base, dst)
        names = case.damage(dst)
        print(f"{case.name:28s} sm1km {case.command} --config {dst / 'run.yaml'}   (expect exit {case.exit_code}; "
              f"message names {', '.join(names) or '-'})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
