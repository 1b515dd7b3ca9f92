"""mkdocs hooks of the docs site (``hooks:`` in ``mkdocs.yml``): the docstrings' Sphinx roles as links.

The docstrings cross-reference with Sphinx roles (``:func:`fit_params```); rendered as Markdown those
come out as ``:func:<code>fit_params</code>``. After every page is rendered, each such role becomes
the code name itself, linked to the object's entry in the API reference when one exists (looked up
from the innermost documented object outwards: the class, its module, its package, then ``sm1km.``).
"""

from __future__ import annotations

import re
from typing import Any

from mkdocs.utils import get_relative_url

ROLE = re.compile(r":(?:func|class|mod|meth|attr|data|exc|obj):<code>([^<]+)</code>")
HEADING_ID = re.compile(r'<h[1-6] id="(sm1km[\w.]*)"')

_ids: dict[str, str] = {}  # API object id -> url of the page that documents it


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
        href = get_relative_url(_ids[target], page.url) + "#" + target
        return f'<a class="autorefs autorefs-internal" href="{href}">{code}</a>'

    return ROLE.sub(link, output)
