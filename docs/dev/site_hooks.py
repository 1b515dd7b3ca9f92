"""mkdocs hooks of the docs site (``hooks:`` in ``mkdocs.yml``): links out of docs/, Sphinx roles.

**Links to repository files outside docs/** (``[bench](../benchmarks/results/bench_small.json)``): they
work when the Markdown is read in a clone or on the forge, but the site has no such file, so mkdocs
would call them broken. Before a page is rendered each such link whose target exists in the repository
becomes a link to it at ``repo_url`` (``blob/main/...``); one whose target does not exist is a warning,
so ``--strict`` fails on it like on any other broken link. Fenced code blocks are left alone.

**Sphinx roles**: the docstrings cross-reference with Sphinx roles (``:func:`fit_params```); rendered
as Markdown those come out as ``:func:<code>fit_params</code>``. After every page is rendered, each such role becomes
the code name itself, linked to the object's entry in the API reference when one exists (looked up
from the innermost documented object outwards: the class, its module, its package, then ``sm1km.``).
"""

from __future__ import annotations

import logging
import pathlib
import posixpath
import re
from typing import Any

from mkdocs.utils import get_relative_url

log = logging.getLogger("mkdocs.hooks.sm1km_site")  # under "mkdocs": counted by --strict

LINK = re.compile(r"(\]\()([^)\s#]+)(#[^)\s]*)?(\s+\"[^\"]*\")?(\))")

ROLE = re.compile(r":(?:func|class|mod|meth|attr|data|exc|obj):<code>([^<]+)</code>")
HEADING_ID = re.compile(r'<h[1-6] id="(sm1km[\w.]*)"')

_ids: dict[str, str] = {}  # API object id -> url of the page that documents it


def _outside_link(target: str, page_dir: pathlib.Path, docs: pathlib.Path, repo: pathlib.Path) -> str | None:
    """The repository path of a relative link that leaves docs/ (None: a link mkdocs checks itself)."""
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith(("/", "#")):
        return None  # a URL, an absolute path (mkdocs' own check) or an anchor
    path = pathlib.Path(posixpath.normpath((page_dir / target).as_posix()))
    if path.is_relative_to(docs):
        return None
    if not path.is_relative_to(repo):
        return ""  # above the repository: broken anywhere
    return path.relative_to(repo).as_posix()


def on_page_markdown(markdown: str, page: Any, config: Any, **kwargs: Any) -> str:
    docs = pathlib.Path(config.docs_dir).resolve()
    repo = pathlib.Path(config.config_file_path).resolve().parent
    page_dir = (docs / page.file.src_uri).parent  # also right for generated pages (index.md)
    repo_url = (config.repo_url or "").rstrip("/")

    def rewrite(m: re.Match[str]) -> str:
        rel = _outside_link(m.group(2), page_dir, docs, repo)
        if rel is None:
            return m.group(0)
        if not rel or not (repo / rel).exists():
            log.warning("Doc file '%s' contains a link '%s', but the target is not in the repository.",
                        page.file.src_uri, m.group(2))
            return m.group(0)
        kind = "tree" if (repo / rel).is_dir() else "blob"
        url = f"{repo_url}/{kind}/main/{rel}"
        return m.group(1) + url + (m.group(3) or "") + (m.group(4) or "") + m.group(5)

    out, fenced = [], False
    for line in markdown.splitlines(keepends=True):
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        out.append(line if fenced else LINK.sub(rewrite, line))
    return "".join(out)


def on_pre_build(**kwargs: Any) -> None:
    _ids.clear()  # `mkdocs serve` rebuilds in the same process


def on_page_content(html: str, page: Any, **kwargs: Any) -> str:
    for object_id in HEADING_ID.findall(html):
        _ids.setdefault(object_id, page.url)
    return html


def _target(name: str, scope: str) -> str | None:
    name = name.lstrip("~").removesuffix("()")
    parts = scope.split(".") if scope else []
    for i in range(len(parts), 0, -1):
        candidate = ".".join(parts[:i] + [name])
        if candidate in _ids:
            return candidate
    for candidate in (name, f"sm1km.{name}"):
        if candidate in _ids:
            return candidate
    return None


def on_post_page(output: str, page: Any, **kwargs: Any) -> str:
    if ":<code>" not in output:
        return output
    headings = [(m.start(), m.group(1)) for m in HEADING_ID.finditer(output)]

    def link(m: re.Match[str]) -> str:
        scope = ""
        for pos, object_id in headings:  # the innermost documented object above the role
            if pos > m.start():
                break
            scope = object_id
        code = f"<code>{m.group(1).lstrip('~')}</code>"
        target = _target(m.group(1), scope)
        if target is None:
            return code
        where = "" if _ids[target] == page.url else get_relative_url(_ids[target], page.url)
        href = f"{where}#{target}"
        return f'<a class="autorefs autorefs-internal" href="{href}">{code}</a>'

    return ROLE.sub(link, output)
