"""The ``zookeeper://`` URL: ensemble, optional digest credentials, chroot."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote

from scheduler.backends.urls import BackendURL, URLForm, parse_host, reveal, split_url
from scheduler.backends.zookeeper.paths import check_segment
from scheduler.errors import excerpt

#: The chroot when the URL names none.
DEFAULT_CHROOT = "/baton"
DEFAULT_PORT = 2181


@dataclass(frozen=True, slots=True)
class ZooKeeperTarget:
    """A parsed ``zookeeper://`` URL.

    Attributes:
        hosts: ``host:port,host:port`` for kazoo.
        root: the absolute chroot path Baton's nodes live under.
        user: digest user name, or ``None`` without credentials.
        password: digest password (never shown, not even by ``repr``).
        shown: the URL with the password replaced by ``***``.
    """

    hosts: str
    root: str
    user: str | None
    password: str | None = field(repr=False)
    shown: str


_FORM = URLForm(
    "zookeeper",
    "zookeeper://[user:password@]host[:port][,host[:port]...][/chroot]",
    (),
    "; session and TLS options go in the zookeeper: config section",
)


def parse_url(url: str | BackendURL) -> ZooKeeperTarget:
    """Parse ``zookeeper://[user:password@]host1[:2181][,host2[:2181]...][/chroot]``.

    The credentials are a digest ``user:password`` (both non-empty; the password as typed
    or percent-encoded); hosts are names, IPv4 or bracketed IPv6 addresses with an optional
    port (default 2181); the chroot defaults to ``/baton``. The URL takes no ``?options``:
    session and TLS options are the ``zookeeper:`` config section.

    Raises:
        ConfigError: naming the problem and the redacted URL (key ``backend``).
    """
    text = reveal(url)
    parts = split_url(text, _FORM)
    user, password = parts.user, parts.password
    if user is not None and (not user or not password):
        raise _FORM.error(text, "credentials must be user:password (both non-empty)")
    hosts = []
    for item in parts.hosts.split(","):
        host, port = parse_host(item, DEFAULT_PORT, _FORM, text)
        hosts.append(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    try:
        path = unquote(parts.path, errors="strict").rstrip("/")
    except UnicodeDecodeError:
        raise _FORM.error(text, "the chroot is not percent-encoded UTF-8") from None
    root = path or DEFAULT_CHROOT
    for segment in root.split("/")[1:]:
        check_segment(segment, "backend", f"chroot {excerpt(root, 80)} in {parts.shown!r}")
    return ZooKeeperTarget(",".join(hosts), root, user, password, parts.shown)


__all__ = ["DEFAULT_CHROOT", "DEFAULT_PORT", "ZooKeeperTarget", "parse_url"]
