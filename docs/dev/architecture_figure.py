"""Draw docs/img/architecture-tiers.png from the package's real imports (the same ast walk as
tests/test_architecture.py): one box per tier with its modules, and the number of import arrows
from each tier to each lower tier.

    .venv/bin/python docs/dev/architecture_figure.py
"""

from __future__ import annotations

import collections
import importlib.util
import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("arch", REPO / "tests" / "test_architecture.py")
arch = importlib.util.module_from_spec(spec)
spec.loader.exec_module(arch)

LAYOUT = [  # (row from the bottom, tiers in that row)
    (0, ["errors", "_version"]), (1, ["core"]), (2, ["config"]), (3, ["storage"]), (4, ["runtime"]),
    (5, ["stages", "synth"]), (6, ["validation"]), (7, ["pipeline"]), (8, ["testing"]), (9, ["cli"]),
]


def main() -> None:
    own, _ = arch._graph()
    modules = collections.defaultdict(list)
    for m in sorted(arch._modules()):
        t = arch._tier(m)
        if t is not None:
            leaf = m.split(".", 2)[2] if m.count(".") >= 2 else m.split(".")[1]
            if leaf != t:
                modules[t].append(leaf.split(".")[0])
    arrows = collections.Counter()
    for m, targets in own.items():
        for t in targets:
            a, b = arch._tier(m), arch._tier(t)
            if a and b and a != b:
                arrows[(a, b)] += 1
    fig, ax = plt.subplots(figsize=(11, 9.5))
    ax.set_xlim(0, 11)
    ax.set_ylim(-0.6, 10)
    ax.axis("off")
    for row, tiers in LAYOUT:
        width = 10.0 / len(tiers)
        for k, t in enumerate(tiers):
            x0 = 0.5 + k * width
            ax.add_patch(plt.Rectangle((x0 + 0.05, row - 0.38), width - 0.1, 0.76, fc="#eef3fb", ec="#35598f"))
            names = sorted(n for n in set(modules.get(t, [])) if not n.startswith("_"))
            text = ", ".join(names)
            maxlen = int(92 * width / 10)
            if len(text) > maxlen:
                text = text[:maxlen - 2] + "…"
            ax.text(x0 + 0.15, row + 0.12, f"{t}/" if names else t, fontsize=11, weight="bold", va="center")
            if names:
                ax.text(x0 + 0.15, row - 0.17, text, fontsize=7.5, va="center", color="#333")
            out = {b: n for (a, b), n in arrows.items() if a == t}
            if out:
                parts = [f"{b} ×{n}" for b, n in sorted(out.items(), key=lambda kv: -kv[1])]
                keep = parts if len(tiers) == 1 else parts[:4]
                line = "imports " + ", ".join(keep) + (", …" if len(keep) < len(parts) else "")
                ax.text(x0 + width - 0.12, row + 0.2, line, fontsize=6.5, ha="right", va="center", color="#7a3b00")
    ax.set_title("sm1km: tiers and the import rule (every arrow points down; counts from the source)", fontsize=12)
    out = REPO / "docs" / "img" / "architecture-tiers.png"
    out.parent.mkdir(exist_ok=True)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    print(out.relative_to(REPO))


if __name__ == "__main__":
    main()
