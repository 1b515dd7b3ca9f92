"""What every lock backend shares: the parsed lock document and its owner, the object's age."""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any


def parse(raw: bytes) -> dict[str, Any]:
    """The lock document; ``{}`` for content that is not a JSON object (a torn or foreign object)."""
    try:
        info = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def owner_token(info: dict[str, Any] | None) -> str | None:
    """The owner's uuid of a parsed lock (None for an empty or unreadable one)."""
    token: str | None = (info or {}).get("owner", {}).get("uuid")
    return token


def age_s(fs: Any, path: str) -> float | None:
    """Seconds since the lock object was last written (None if it is gone or the store says nothing)."""
    try:
        info = fs.info(path)
    except FileNotFoundError:
        return None
    m = info.get("mtime") or info.get("LastModified") or info.get("created")
    if isinstance(m, dt.datetime):
        return time.time() - m.timestamp()
    return time.time() - float(m) if m is not None else None
