"""The package's tiers and their import rule (docs/architecture.md), checked on the source with ``ast``.

Rule: ``core <- storage <- runtime <- stages <- validation <- pipeline <- cli``. A module may import its
own tier and the tiers below it, never above; ``errors`` and ``_version`` are importable from everywhere,
``config`` from everything above ``core``. ``synth`` sits beside ``stages`` (it writes input files
in their real formats), ``testing`` beside ``cli``. ``pipeline`` (the module ``sm1km.pipeline``: the
``Pipeline`` and its table of stage functions) sits above ``validation`` because it runs ``validate``,
which builds on the stages. Every import counts, also one inside a function:
a lazy import is still a dependency a reader has to follow. No cycles between modules.
``core`` is pure science: the standard library, numpy, pandas, scipy, xarray (and ``affine``, the
transform type), never an I/O or cluster library.
"""

from __future__ import annotations

import ast
import pathlib
import sys

import pytest

PKG = pathlib.Path(__file__).resolve().parents[1] / "pipeline" / "sm1km"

#: tier -> rank; a module may import a module of lower rank, or of the same tier.
RANK = {
    "errors": 0, "_version": 0, "redact": 0,
    "core": 1,
    "config": 2,
    "storage": 3,
    "runtime": 4,
    "stages": 5, "synth": 5,
    "validation": 6,
    "pipeline": 7,
    "testing": 8,
    "cli": 9,
}
CORE_ALLOWED = {"numpy", "pandas", "scipy", "xarray", "affine"}


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, pathlib.Path]:
    return {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _imports(name: str, path: pathlib.Path, known: set[str]) -> tuple[set[str], set[str]]:
    """(sm1km modules, top-level third-party/stdlib packages) that ``path`` imports anywhere."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_pkg = path.name == "__init__.py"
    own, other = set(), set()

    def add(target: str, names: list[str]) -> None:
        if target == "sm1km" or target.startswith("sm1km."):
            for n in names:  # `from sm1km.x import y`: y may be a module or a name in x
                own.add(f"{target}.{n}" if f"{target}.{n}" in known else target)
        else:
            other.add(target.split(".")[0])

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                add(a.name, [])
                if a.name.startswith("sm1km"):
                    own.add(a.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            add(target, [a.name for a in node.names])
    own.discard(name)
    return own, other


def _tier(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None  # the root package (lazy API facade) has no tier


def _graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    mods = _modules()
    known = set(mods)
    own, other = {}, {}
    for name, path in mods.items():
        own[name], other[name] = _imports(name, path, known)
    return own, other


def test_every_module_belongs_to_a_tier():
    unknown = sorted(m for m in _modules() if _tier(m) is not None and _tier(m) not in RANK)
    assert not unknown, f"modules outside the tiers (add them to a tier folder or to RANK): {unknown}"


def test_imports_point_down_the_tiers():
    own, _ = _graph()
    bad = []
    for mod, targets in own.items():
        t = _tier(mod)
        if t is None:
            continue
        for target in targets:
            u = _tier(target)
            if u is None:
                bad.append(f"{mod} -> {target} (the root package is the user API, not a dependency)")
            elif u != t and RANK[u] >= RANK[t]:
                bad.append(f"{mod} ({t}) -> {target} ({u})")
    assert not bad, "imports that break the tier rule:\n" + "\n".join(sorted(bad))


def test_no_import_cycles():
    own, _ = _graph()
    graph = {m: {t for t in ts if t in own} for m, ts in own.items()}
    # a package imports its submodules by loading them: an edge pkg -> pkg.sub is not a cycle back
    cycles, state, stack = [], {}, []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if t.startswith(m + ".") or m.startswith(t + "."):
                continue
            if state.get(t) == 1:
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_core_is_pure_science():
    _, other = _graph()
    stdlib = set(sys.stdlib_module_names)
    bad = {m: sorted(pkgs - stdlib - CORE_ALLOWED - {""}) for m, pkgs in other.items() if _tier(m) == "core"}
    bad = {m: p for m, p in bad.items() if p}
    assert not bad, f"core modules importing I/O or cluster libraries: {bad}"


@pytest.mark.parametrize("source,target,ok", [
    ("sm1km.core.fusion", "sm1km.storage.store", False),
    ("sm1km.storage.store", "sm1km.core.grid", True),
    ("sm1km.stages.fuse", "sm1km.cli", False),
    ("sm1km.stages.fuse", "sm1km.synth", False),
    ("sm1km.cli.fuse", "sm1km.stages.fuse", True),
    ("sm1km.pipeline", "sm1km.validation.validate", True),
    ("sm1km.stages.fuse", "sm1km.pipeline", False),
    ("sm1km.validation.validate", "sm1km.pipeline", False),
    ("sm1km.cli.run", "sm1km.pipeline", True),
])
def test_the_rule_itself(source, target, ok):
    """The checker's verdict on a few arrows (so the tests above can fail)."""
    t, u = _tier(source), _tier(target)
    assert (u == t or RANK[u] < RANK[t]) is ok
