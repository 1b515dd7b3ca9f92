"""Pages the docs site generates at build time (mkdocs-gen-files runs this from ``mkdocs.yml``).

* ``index.md``: the README, its links made relative to docs/ (one source for both).
* ``api/index.md``: the packages, each with the first sentence of its docstring.
* ``api/<package>.md``: one API reference page per public package; every module of the package
  (private ``_*`` modules left out) is a ``::: sm1km.x.y`` block that mkdocstrings fills from the
  docstrings (static analysis with griffe: nothing is imported). A module added to a package appears
  on its page without editing anything; a new *package* is added to ``API_PAGES`` and to the nav.

The CLI (``sm1km.cli``) and the test helpers (``sm1km.testing``) are not public API: the CLI is
documented by its ``--help`` and the pages.
"""

from __future__ import annotations

import ast
import pathlib
import re

import mkdocs_gen_files

REPO = pathlib.Path(__file__).resolve().parents[2]
PACKAGE = REPO / "pipeline" / "sm1km"

# page name -> (title, modules documented on it, in this order; "pkg.*": pkg and every module below it)
API_PAGES: dict[str, tuple[str, list[str]]] = {
    "sm1km": ("sm1km: the Python API", ["sm1km", "sm1km.pipeline"]),
    "config": ("sm1km.config", ["sm1km.config"]),
    "errors": ("sm1km.errors", ["sm1km.errors"]),
    "core": ("sm1km.core", ["sm1km.core.*"]),
    "storage": ("sm1km.storage", ["sm1km.storage.*"]),
    "runtime": ("sm1km.runtime", ["sm1km.runtime.*"]),
    "stages": ("sm1km.stages", ["sm1km.stages.*"]),
    "validation": ("sm1km.validation", ["sm1km.validation.*"]),
    "synth": ("sm1km.synth", ["sm1km.synth.*"]),
}


def modules_of(name: str) -> list[str]:
    """``name`` and, for ``pkg.*``, the package and every public module below it (depth first, sorted)."""
    if not name.endswith(".*"):
        return [name]
    name = name[:-2]
    path = PACKAGE.parent.joinpath(*name.split("."))
    out = [name]
    for child in sorted(path.iterdir()):
        if child.name.startswith("_") or child.name == "__pycache__":
            continue
        if child.is_dir() and (child / "__init__.py").exists():
            out += modules_of(f"{name}.{child.name}.*")
        elif child.suffix == ".py":
            out.append(f"{name}.{child.stem}")
    return out


def api_page(title: str, names: list[str]) -> str:
    lines = [f"# {title}", ""]
    for top in names:
        for mod in modules_of(top):
            lines += [f"::: {mod}", ""]
    return "\n".join(lines)


def first_sentence(module: str) -> str:
    """The first sentence of a module's docstring, on one line."""
    path = PACKAGE.parent.joinpath(*module.split("."))
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    return " ".join(re.split(r"\.\s", doc, maxsplit=1)[0].split()).rstrip(".") + "."


def api_index() -> str:
    lines = ["# API reference", "",
             "Generated from the docstrings; one page per package, every public module of it. The packages'",
             "tiers and their import rule: [architecture](../architecture.md#the-tiers).", "",
             "| page | what |", "|---|---|"]
    for page, (title, names) in API_PAGES.items():
        what = first_sentence(names[0].removesuffix(".*")).replace("|", "\\|")
        lines.append(f"| [{title}]({page}.md) | {what} |")
    return "\n".join(lines) + "\n"


def index_page() -> str:
    """The README as docs/index.md: ``docs/x.md`` links become ``x.md``, other relative links ``../x``
    (links out of docs/, which site_hooks.py points at the repository)."""

    def relink(m: re.Match[str]) -> str:
        target = m.group(1)
        if target.startswith("docs/"):
            target = target.removeprefix("docs/")
        elif not re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*:|/|#)", target):
            target = "../" + target
        return f"]({target}"

    text = (REPO / "README.md").read_text(encoding="utf-8")
    return re.sub(r"\]\(([^)\s]+)", relink, text)


with mkdocs_gen_files.open("index.md", "w") as f:
    f.write(index_page())

with mkdocs_gen_files.open("api/index.md", "w") as f:
    f.write(api_index())

for page, (title, names) in API_PAGES.items():
    with mkdocs_gen_files.open(f"api/{page}.md", "w") as f:
        f.write(api_page(title, names))
