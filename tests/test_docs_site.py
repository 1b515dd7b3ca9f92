"""The docs site (mkdocs.yml): it builds with --strict, renders every page of docs/ and the figures,
has an API reference filled from the docstrings, and fails on a broken link (also one to a repository
file outside docs/), a missing anchor or a page left out of the nav. Needs the ``docs`` extra (``make test`` installs it); skipped without it.
"""

from __future__ import annotations

import ast
import html
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest
import yaml

for _mod in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python", "mkdocs_gen_files",
             "mdx_truly_sane_lists", "mdx_breakless_lists"):
    pytest.importorskip(_mod, reason="the docs extra is not installed (pip install -e '.[docs]')")

REPO = pathlib.Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
# the notices some plugins print about mkdocs 2 on every build: noise, not about this site
ENV = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "DISABLE_MKDOCS_2_WARNING": "true"}
API_PACKAGES = ["sm1km", "config", "errors", "core", "storage", "runtime", "stages", "validation"]


def build(root: pathlib.Path, site: pathlib.Path) -> subprocess.CompletedProcess[str]:
    """`mkdocs build --strict` of the mkdocs.yml in ``root`` into ``site``."""
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(root / "mkdocs.yml"), "-d", str(site)],
        cwd=root, env=ENV, capture_output=True, text=True, timeout=600,
    )


def text_of(page: pathlib.Path) -> str:
    """The visible text of an HTML page, whitespace collapsed."""
    raw = re.sub(r"<[^>]+>", " ", page.read_text(encoding="utf-8"))
    return " ".join(html.unescape(raw).split())


def docstring_of(path: pathlib.Path, name: str | None) -> str:
    """The first sentence of the docstring of top-level ``name`` in ``path`` (None: of the module), read
    from the source so that the test follows the docstring."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    node = tree if name is None else next(n for n in tree.body if getattr(n, "name", None) == name)
    doc = ast.get_docstring(node)  # type: ignore[arg-type]
    assert doc, f"{path.name}:{name} has no docstring"
    first = re.split(r"\.\s", doc)[0]
    first = re.sub(r":\w+:`~?([^`]+)`", r"\1", first)  # a Sphinx role is rendered as its name
    return " ".join(first.replace("`", "").split())


def doc_pages(docs: pathlib.Path) -> list[str]:
    return sorted(p.relative_to(docs).as_posix() for p in docs.rglob("*.md"))


def mkdocs_yml() -> dict:
    class Loader(yaml.SafeLoader):
        pass

    # mkdocs.yml names a Python function (toc's slugify): not needed here
    Loader.add_multi_constructor("tag:yaml.org,2002:python/", lambda loader, suffix, node: None)
    return yaml.load((REPO / "mkdocs.yml").read_text(encoding="utf-8"), Loader=Loader)  # noqa: S506 (SafeLoader)


def nav_pages() -> set[str]:
    nav = mkdocs_yml()["nav"]
    out: set[str] = set()

    def walk(item: object) -> None:
        if isinstance(item, str):
            out.add(item)
        elif isinstance(item, list):
            for x in item:
                walk(x)
        elif isinstance(item, dict):
            for x in item.values():
                walk(x)

    walk(nav)
    return out


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("docs") / "site"
    proc = build(REPO, out)
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    return out


def test_every_page_of_docs_is_in_the_nav() -> None:
    missing = sorted(set(doc_pages(DOCS)) - nav_pages())
    assert not missing, f"pages of docs/ not in mkdocs.yml's nav (add them to the section they belong to): {missing}"


def test_site_renders_every_page_and_the_figures(site: pathlib.Path) -> None:
    for page in doc_pages(DOCS):
        out = site / page.replace(".md", ".html")
        assert out.is_file(), f"{page} was not rendered"
    assert "gap-free daily 1 km surface soil moisture" in text_of(site / "index.html")  # the README
    for img in sorted((DOCS / "img").glob("*.png")):
        assert (site / "img" / img.name).read_bytes() == img.read_bytes()
    # every <img> of every page resolves to a file of the site
    for page in site.rglob("*.html"):
        for src in re.findall(r'<img [^>]*src="([^"]+)"', page.read_text(encoding="utf-8")):
            if not src.startswith(("http:", "https:", "data:")):
                assert (page.parent / src).resolve().is_file(), f"{page.relative_to(site)}: <img src={src}> missing"
    assert not list(site.rglob("*.py")), "docs/dev/*.py are tools, not pages"


def test_api_reference_is_filled_from_the_docstrings(site: pathlib.Path) -> None:
    overview = (site / "api" / "index.html").read_text(encoding="utf-8")
    for pkg in API_PACKAGES:
        assert (site / "api" / f"{pkg}.html").is_file(), f"no API page for {pkg}"
        assert f'href="{pkg}.html"' in overview, f"api/index does not list {pkg}"
    pkg = REPO / "pipeline" / "sm1km"
    known = [  # (page, module file, object, anchor)
        ("core", pkg / "core" / "fusion.py", "fit_params", "sm1km.core.fusion.fit_params"),
        ("storage", pkg / "storage" / "store.py", None, "sm1km.storage.store"),
        ("errors", pkg / "errors.py", "Sm1kmError", "sm1km.errors.Sm1kmError"),
        ("config", pkg / "config.py", "RunConfig", "sm1km.config.RunConfig"),
        ("sm1km", pkg / "pipeline.py", "Pipeline", "sm1km.pipeline.Pipeline"),
    ]
    for page, path, name, anchor in known:
        out = site / "api" / f"{page}.html"
        assert f'id="{anchor}"' in out.read_text(encoding="utf-8"), f"{anchor} not on api/{page}"
        doc = docstring_of(path, name)
        squeezed = "".join(text_of(out).split())  # inline tags (<code>) leave spaces: compare without any
        assert "".join(doc.split()) in squeezed, f"the docstring of {anchor} is not on api/{page}: {doc!r}"
    # the docstrings' Sphinx roles (:func:`x`) are links into the reference, not raw text (docs/dev/site_hooks.py)
    for page in API_PACKAGES:
        out = (site / "api" / f"{page}.html").read_text(encoding="utf-8")
        left = re.findall(r":(?:func|class|mod|meth|attr|data|exc|obj):<code>[^<]*", out)
        assert not left, f"api/{page}: unresolved roles {left[:5]}"
    core = (site / "api" / "core.html").read_text(encoding="utf-8")
    assert '<a class="autorefs autorefs-internal" href="#sm1km.core.fusion.fit_params"><code>fit_params</code></a>' in core
    # the CLI internals are not API
    assert "sm1km.cli" not in (site / "api" / "sm1km.html").read_text(encoding="utf-8")


def test_links_out_of_docs_point_at_the_repository(site: pathlib.Path) -> None:
    # docs/performance.md links ../benchmarks/results/*.json: files of the repository, not of the site
    page = (site / "performance.html").read_text(encoding="utf-8")
    repo_url = mkdocs_yml()["repo_url"]
    assert f'href="{repo_url}/blob/main/benchmarks/results/bench_small.json"' in page
    assert (REPO / "benchmarks" / "results" / "bench_small.json").is_file()


def test_broken_links_missing_anchor_or_page_outside_the_nav_fail_the_build(tmp_path: pathlib.Path) -> None:
    root = tmp_path / "repo"
    shutil.copytree(DOCS, root / "docs", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    # the package as empty modules: the API pages still build (same nav), in a third of the time
    for src in (REPO / "pipeline").rglob("*.py"):
        stub = root / src.relative_to(REPO)
        stub.parent.mkdir(parents=True, exist_ok=True)
        stub.touch()
    for name in ("mkdocs.yml", "README.md"):
        shutil.copy2(REPO / name, root / name)
    for entry in REPO.iterdir():  # the rest of the repository, for the links out of docs/
        if not (root / entry.name).exists() and not entry.name.startswith("."):
            (root / entry.name).symlink_to(entry)
    with open(root / "docs" / "fusion.md", "a", encoding="utf-8") as f:
        f.write("\n[a page that is not there](no-such-page.md) and [a heading that is not there]"
                "(reading.md#no-such-heading) and [a repository file that is not there]"
                "(../benchmarks/results/no-such-file.json)\n")
    (root / "docs" / "orphan-page.md").write_text("# Not in the nav\n", encoding="utf-8")

    proc = build(root, tmp_path / "site")
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0, log
    assert re.search(r"WARNING.*fusion\.md.*no-such-page\.md.*not found", log), log
    assert re.search(r"WARNING.*fusion\.md.*reading\.md#no-such-heading.*does not contain an anchor", log), log
    assert re.search(r'not included in the "nav" configuration:\s*- orphan-page\.md', log), log
    assert re.search(r"WARNING.*fusion\.md.*no-such-file\.json.*not in the repository", log), log
    assert re.search(r"Aborted with \d+ warnings in strict mode", log), log  # each line above is a WARNING
