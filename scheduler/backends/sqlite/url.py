"""The ``sqlite:///`` URL: a path, parsed once into an absolute :class:`~pathlib.Path`."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

from scheduler.backends.urls import MAX_URL_LENGTH, BackendURL, URLForm, reveal

_FORM = URLForm("sqlite", "sqlite:///relative/path.db or sqlite:////absolute/path.db")


def path_from_url(url: str | BackendURL) -> Path:
    """The absolute database path named by a ``sqlite:///`` URL.

    ``sqlite:///relative/path.db`` is relative to the current directory (resolved now, so a
    later ``chdir`` does not move the database); ``sqlite:////absolute/path.db`` is absolute.
    Percent-escapes in the path are decoded. The URL has no host, credentials or options.

    Raises:
        ConfigError: the URL is not of that form (key ``backend``).
    """
    text = reveal(url)
    if len(text) > MAX_URL_LENGTH:
        raise _FORM.error(
            text, f"the URL is {len(text)} characters long (at most {MAX_URL_LENGTH})"
        )
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise _FORM.error(text, "it has a control character")
    if text[: len("sqlite:///")].lower() != "sqlite:///":
        raise _FORM.error(text, "a SQLite URL has no host: three slashes, then the path")
    parts = urlsplit(text)
    if parts.query or parts.fragment or "?" in text or "#" in text:
        raise _FORM.error(text, "no ?query or #fragment is allowed (write '?' as %3F, '#' as %23)")
    try:
        raw = unquote(parts.path[1:], errors="strict")
    except UnicodeDecodeError:
        raise _FORM.error(text, "the path is not percent-encoded UTF-8") from None
    if not raw or raw.endswith("/"):
        raise _FORM.error(text, "it names no database file")
    if raw == ":memory:":
        raise _FORM.error(text, "an in-memory database cannot be shared by replicas; name a file")
    if "\x00" in raw:
        raise _FORM.error(text, "the path has a NUL character")
    return Path(os.path.abspath(raw))


__all__ = ["path_from_url"]
