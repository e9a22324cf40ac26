"""The ``etcd://`` (and ``etcds://``) URL, parsed once into an :class:`EtcdTarget`.

``etcd://[user:password@]host[:port][,host[:port]...][/prefix][?option=value&...]`` names
the cluster's client endpoints (tried in order, the next one when one does not answer),
the key prefix Baton keeps everything under (default ``/baton``), and the credentials of an
etcd user (``--auth`` on the server). ``etcds://`` is the same over TLS, always verifying the
server's certificate and name: with ``cacert`` (a PEM file of CAs) or the system's CAs, and
a client certificate with ``cert`` and ``key`` when the server asks for one
(``--client-cert-auth``). There is no option that turns verification off.

Timeouts are not URL options: every call is bounded by ``op_timeout`` (as for every backend).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from scheduler.backends.urls import BackendURL, URLForm, parse_host, reveal, split_url
from scheduler.errors import excerpt

#: The port of a host without one: etcd's client port.
DEFAULT_PORT = 2379
#: The key prefix when the URL has no path.
DEFAULT_PREFIX = "/baton"

_OPTIONS = ("user", "password", "cacert", "cert", "key")
_FORMS = {
    scheme: URLForm(
        scheme,
        f"{scheme}://[user:password@]host[:port][,host[:port]...][/prefix][?option=value&...]",
        _OPTIONS,
    )
    for scheme in ("etcd", "etcds")
}
_REFUSED = {
    option: "remove it from the URL; Baton bounds every call by op_timeout"
    for option in ("timeout", "dial_timeout", "command_timeout", "keepalive_time")
}
# Path segments of the key prefix: letters, digits, '.', '_', '-', one '/' between them.
_PREFIX = re.compile(r"(?:/[A-Za-z0-9._-]+){1,16}")


@dataclass(frozen=True, slots=True, kw_only=True)
class EtcdTarget:
    """A parsed ``etcd://`` or ``etcds://`` URL.

    Attributes:
        endpoints: ``(host, port)`` pairs, in the order they are tried.
        tls: whether to speak TLS (``etcds://``), verifying the server.
        prefix: the key prefix, ``/`` then segments, no trailing ``/``.
        user: the etcd user, or ``None`` (a server without ``--auth``).
        password: its password (never shown), or ``None``.
        cacert: PEM file of the CAs that sign the server's certificate (``None``: the
            system's CAs).
        cert: PEM client certificate; ``key``: its private key (both or neither).
        shown: the URL with the password replaced by ``***``.
    """

    endpoints: tuple[tuple[str, int], ...]
    tls: bool
    prefix: str
    user: str | None
    password: str | None = field(repr=False)
    cacert: str | None
    cert: str | None
    key: str | None
    shown: str

    def base_urls(self) -> tuple[str, ...]:
        """The HTTP(S) base URL of each endpoint, in order."""
        scheme = "https" if self.tls else "http"
        return tuple(
            f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"
            for host, port in self.endpoints
        )


def parse_url(url: str | BackendURL) -> EtcdTarget:
    """Parse an ``etcd://`` or ``etcds://`` URL (see the module docstring).

    The user and password may be in the credentials (as typed or percent-encoded) or
    ``?user=``/``?password=``, not both; a password needs a user. ``cacert``, ``cert`` and
    ``key`` name existing files and need ``etcds://``; ``cert`` and ``key`` go together.

    Raises:
        ConfigError: naming the problem, the redacted URL and the allowed options (key
            ``backend``).
    """
    text = reveal(url)
    scheme = text.partition("://")[0].lower()
    form = _FORMS.get(scheme, _FORMS["etcd"])
    parts = split_url(text, form, _REFUSED)
    options = parts.options
    if not parts.hosts:
        raise form.error(text, "the host is missing")
    endpoints = tuple(parse_host(item, DEFAULT_PORT, form, text) for item in parts.hosts.split(","))
    if len(set(endpoints)) != len(endpoints):
        raise form.error(text, "an endpoint is given twice")

    prefix = parts.path.rstrip("/") or DEFAULT_PREFIX
    if not _PREFIX.fullmatch(prefix) or len(prefix) > 200:
        raise form.error(
            text,
            "the key prefix must be 1 to 16 '/'-separated segments of letters, digits, '.', "
            f"'_' or '-' (at most 200 characters), got {excerpt(prefix, 70)}",
        )

    user, password = parts.user, parts.password
    if "user" in options:
        if user:
            raise form.error(text, "the user is given twice (before '@' and as ?user=)")
        user = options["user"]
    if "password" in options:
        if password is not None:
            raise form.error(text, "the password is given twice (before '@' and as ?password=)")
        password = options["password"]
    if password == "":
        raise form.error(text, "the password is empty")
    if password is not None and not user:
        raise form.error(text, "a password needs a user (write user:password@)")
    if user and password is None:
        raise form.error(text, "an etcd user needs a password (write user:password@)")

    tls = scheme == "etcds"
    tls_files = ("cacert", "cert", "key")
    if not tls and any(option in options for option in tls_files):
        raise form.error(text, "TLS files need etcds://")
    if ("cert" in options) != ("key" in options):
        raise form.error(text, "cert and key go together (give both or neither)")
    for option in tls_files:
        if option in options and not Path(options[option]).is_file():
            raise form.error(text, f"{option} names no file: {excerpt(options[option], 80)}")
    return EtcdTarget(
        endpoints=endpoints,
        tls=tls,
        prefix=prefix,
        user=user or None,
        password=password,
        cacert=options.get("cacert"),
        cert=options.get("cert"),
        key=options.get("key"),
        shown=parts.shown,
    )


__all__ = ["DEFAULT_PORT", "DEFAULT_PREFIX", "EtcdTarget", "parse_url"]
