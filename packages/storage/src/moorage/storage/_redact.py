"""Keeping credentials out of logs and error messages.

URLs lose their user-info and query string (pre-signed S3 URLs and Azure SAS tokens live there).
Every secret a provider is handed (keys, tokens, header values) is registered with
:func:`register_secret`, and :func:`scrub` replaces any registered value in a text. The error
boundary (``moorage.storage._errors``) scrubs every message it lets out.
"""

from __future__ import annotations

import re
import threading
from urllib.parse import urlsplit, urlunsplit

__all__ = ["redact_url", "register_secret", "scrub"]

_lock = threading.Lock()
_secrets: set[str] = set()
_URL = re.compile(r"\b(https?)://[^\s'\"<>]+")
_MIN_SECRET = 4


def register_secret(value: str | None) -> None:
    """Remember ``value`` so that :func:`scrub` hides it (short values are ignored)."""
    if value and len(value) >= _MIN_SECRET:
        with _lock:
            _secrets.add(value)


def redact_url(url: str) -> str:
    """``url`` without credentials in user-info and without its query string."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<url>"
    netloc = parts.netloc.rsplit("@", 1)[-1]
    query = "<redacted>" if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def scrub(text: str) -> str:
    """``text`` with URLs redacted and every registered secret replaced by ``***``."""
    text = _URL.sub(lambda m: redact_url(m.group(0)), text)
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, "***")
    return text
