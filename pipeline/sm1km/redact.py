"""Secrets never leave the process: redaction of credentials wherever they hide, before anything is
logged or stored, and text from input files treated as data.

Credentials belong in the environment or in Kubernetes Secrets; the config refuses them where it
can (``StoreConfig``). What it cannot refuse — a pre-signed HTTPS input URL (``?X-Amz-Signature=``),
``user:pass@`` in a URL, a secret nested in ``client_kwargs`` — is redacted here:

* :func:`redact_url`: userinfo (``user:pass@`` → ``***@``) and the values of every query
  parameter (``?X-Amz-Signature=***&token=***``; names stay, so a reader still sees the URL was
  signed) of any URL-like string;
* :func:`redact`: the same recursively over dicts/lists, plus the value of every key that names a
  credential (``key``, ``secret``, ``token``, ``password``, ``aws_*``, ``authorization`` ...) at any
  depth;
* :class:`RedactingFilter`: a logging filter the CLI installs on its handlers, applying
  :func:`redact_text` to every formatted record (messages and their arguments);
* :func:`plain_label`: header strings from input files (ISMN station names) as plain text —
  control characters removed, length bounded — for labels; matplotlib labels are drawn with
  ``parse_math=False`` and HTML goes through ``html.escape`` (a ``$`` in a station name must not
  switch matplotlib into mathtext).
"""

from __future__ import annotations

import logging
import re
from typing import Any

MASK = "***"

#: keys whose value is a credential, compared lower-case with ``-`` read as ``_``
SECRET_KEYS = frozenset({
    "key", "secret", "token", "password", "passwd", "session_token", "aws_access_key_id",
    "aws_secret_access_key", "aws_session_token", "access_key", "secret_key", "secret_access_key",
    "access_key_id", "authorization", "api_key", "apikey", "credentials", "client_secret",
    "private_key", "sas_token", "account_key",
})

_URL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<rest>[^\s'\"<>]*)")
_QUERY_PAIR = re.compile(r"(?P<name>[^=&#]+)=(?P<value>[^&#]*)")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def is_secret_key(name: object) -> bool:
    """Does a mapping key name a credential?"""
    return isinstance(name, str) and name.lower().replace("-", "_") in SECRET_KEYS


def _redact_one_url(m: re.Match[str]) -> str:
    scheme, rest = m.group("scheme"), m.group("rest")
    frag = ""
    if "#" in rest:
        rest, frag = rest.split("#", 1)
        frag = "#" + frag
    query = ""
    if "?" in rest:
        rest, query = rest.split("?", 1)
        query = "?" + _QUERY_PAIR.sub(lambda q: f"{q.group('name')}={MASK}", query)
    slash = rest.find("/")
    authority, path = (rest, "") if slash < 0 else (rest[:slash], rest[slash:])
    if "@" in authority:
        authority = f"{MASK}@{authority.rsplit('@', 1)[1]}"
    return f"{scheme}{authority}{path}{query}{frag}"


def redact_url(url: str) -> str:
    """``url`` without userinfo and without query parameter values (every URL in a longer string)."""
    return _URL.sub(_redact_one_url, url)


def redact_text(text: str) -> str:
    """Free text (a log line, an error message) with every URL in it redacted."""
    return redact_url(text) if "://" in text else text


def redact(obj: Any) -> Any:
    """A copy of ``obj`` (JSON-like: dicts, lists, strings, numbers) with credentials masked."""
    if isinstance(obj, dict):
        return {k: (MASK if is_secret_key(k) and v not in (None, "") else redact(v)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(redact(v) for v in obj)
    if isinstance(obj, str):
        return redact_text(obj)
    return obj


def find_secret_keys(obj: Any, path: str = "") -> list[str]:
    """Dotted paths of every credential-named key with a value, at any depth (for config checks)."""
    out: list[str] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            p = f"{path}.{k}" if path else str(k)
            if is_secret_key(k) and v not in (None, ""):
                out.append(p)
            else:
                out.extend(find_secret_keys(v, p))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out.extend(find_secret_keys(v, f"{path}[{i}]"))
    return out


class RedactingFilter(logging.Filter):
    """Redacts URLs (userinfo, query values) in every record that passes a handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # a broken format string: leave the record to logging's own error path
            return True
        red = redact_text(msg)
        if red != msg:
            record.msg, record.args = red, None
        return True


def install_log_redaction(logger: logging.Logger | None = None) -> None:
    """Add a :class:`RedactingFilter` to every handler of ``logger`` (default: the root logger)."""
    for h in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, RedactingFilter) for f in h.filters):
            h.addFilter(RedactingFilter())


def plain_label(text: object, limit: int = 64) -> str:
    """A string read from an input file, safe as a label: no control characters, at most ``limit``
    characters (an ellipsis marks a cut). Escaping for the target (HTML, matplotlib) is separate."""
    s = _CONTROL.sub(" ", str(text)).strip()
    return s if len(s) <= limit else s[:limit - 1] + "…"


__all__ = ["MASK", "SECRET_KEYS", "is_secret_key", "redact_url", "redact_text", "redact", "find_secret_keys",
           "RedactingFilter", "install_log_redaction", "plain_label"]
