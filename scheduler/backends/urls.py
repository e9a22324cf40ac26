"""Backend URLs, parsed once at the edge: credentials, hosts, allow-listed options, redaction.

Each scheme's parser (``path_from_url`` in :mod:`~scheduler.backends.sqlite`, ``parse_url``
in :mod:`~scheduler.backends.redis` and :mod:`~scheduler.backends.zookeeper`) turns its URL
into a typed target with :func:`split_url` and :func:`parse_host`; everything after that
trusts the types. The rules, for every scheme with a host (README, "Backend URLs"):

* **Credentials** are everything between ``scheme://`` and the *last* ``@`` of the URL, so a
  generated password may contain ``/``, ``:``, ``#`` and ``@`` as it is. An ``@`` after the
  host (in a path or an option value) must therefore be written ``%40``. Percent-escapes
  are decoded in credentials and option values (write a literal ``%`` as ``%25``); ``+``
  stays ``+``.
* **Options** are ``?name=value&...``: only the names the scheme allows, each at most once.
* The URL is printable ASCII without spaces (percent-encode anything else), at most
  :data:`MAX_URL_LENGTH` characters.

Every problem is a :class:`~scheduler.errors.ConfigError` for the key ``backend``, on one
line that shows the URL only redacted (:func:`redact`) and cut short, and that lists the
scheme's form and allowed options.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

from scheduler.errors import ConfigError, excerpt

#: The longest backend URL accepted, in characters.
MAX_URL_LENGTH = 4096
#: The most characters of a (redacted) URL an error message shows.
SHOWN_LIMIT = 120

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{0,31}")
# A user name shown as typed; any other user name is hidden with the password.
_PLAIN_USER = re.compile(r"[A-Za-z0-9._~+-]{0,64}")
_OPTION_NAME = re.compile(r"[A-Za-z0-9_]{1,32}")
# Digits, letters, '-', '_' and '.' between labels: host names and IPv4 addresses.
_HOSTNAME = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*\.?")
# '?name=' inside what the last '@' makes the credentials: an option value with an '@'.
_OPTION_IN_CREDENTIALS = re.compile(r"\?[A-Za-z_][A-Za-z0-9_]*=")

#: Options whose values are never secret; :func:`redact` hides the value of every other one.
PLAIN_OPTIONS = frozenset(
    {
        "db",
        "username",
        "client_name",
        "ssl_ca_certs",
        "ssl_certfile",
        "ssl_keyfile",
        "ssl_cert_reqs",
        "ssl_check_hostname",
        "socket_timeout",
        "socket_connect_timeout",
        "timeout",
        "retry_on_timeout",
        "retry_on_error",
        # redis+sentinel://, redis+cluster://
        "min_replicas_ack",
        "sentinel_username",
        # postgresql://
        "user",
        "dbname",
        "schema",
        "create_schema",
        "pgbouncer",
        "sslmode",
        "sslrootcert",
        "sslcert",
        "sslkey",
        "application_name",
        "target_session_attrs",
        # etcd://, etcds://
        "cacert",
        "cert",
        "key",
    }
)


def redact(url: str) -> str:
    """``url`` with its credentials and any secret option value replaced by ``***``.

    Works on any text, parsable or not, so that even a malformed URL is echoed safely:
    everything up to the last ``@`` after ``scheme://`` is credentials (the user name stays
    when it is plain), the value of every option not in :data:`PLAIN_OPTIONS` (``password``
    included) and any ``#fragment`` are hidden. A ``sqlite:///path`` has no credentials, so
    an ``@`` in its path is kept.
    """
    scheme, sep, rest = url.partition("://")
    if sep and _SCHEME.fullmatch(scheme):
        prefix = scheme + sep
    else:
        prefix, rest = "", url
    if not (prefix.lower() == "sqlite://" and rest.startswith("/")):
        userinfo, at, rest = rest.rpartition("@")
        if at:
            user, colon, _ = userinfo.partition(":")
            plain = bool(colon) and _PLAIN_USER.fullmatch(user) is not None
            prefix += f"{user}:***@" if plain else "***@"
    rest, hash_, _ = rest.partition("#")
    head, question, query = rest.partition("?")
    if question:
        head += "?" + "&".join(_redact_option(item) for item in query.split("&"))
    return prefix + head + ("#***" if hash_ else "")


def _redact_option(item: str) -> str:
    name, eq, _ = item.partition("=")
    if not _OPTION_NAME.fullmatch(name):
        return "***"
    if not eq or name in PLAIN_OPTIONS:
        return item
    return f"{name}=***"


def shown_excerpt(url: str) -> str:
    """The redacted ``url``, quoted and cut to :data:`SHOWN_LIMIT` characters, for messages."""
    return excerpt(redact(url), SHOWN_LIMIT)


@dataclass(frozen=True, slots=True)
class URLForm:
    """What one scheme accepts, for parsing and for the one-line error messages.

    Attributes:
        scheme: the scheme, lower case, without ``://``.
        form: the URL's shape, e.g. ``redis://[[user]:password@]host[:port][/db]``.
        options: the query options allowed, in the order the errors list them.
        note: said after the options in every error (where other settings live).
    """

    scheme: str
    form: str
    options: tuple[str, ...] = ()
    note: str = ""

    def error(self, url: str, problem: str) -> ConfigError:
        """A :class:`ConfigError` for ``backend``: ``problem``, the redacted URL, the form."""
        allowed = ", ".join(self.options) if self.options else "none"
        return ConfigError(
            "backend",
            f"{shown_excerpt(url)}: {problem}; expected {self.form} "
            f"(options: {allowed}){self.note}",
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class URLParts:
    """A URL split by :func:`split_url`. Credentials and options are decoded.

    Attributes:
        user: the user name, or ``None`` without credentials (``""`` for ``:password@``).
        password: the password (never shown), or ``None``.
        hosts: the host list as written, between the credentials and the path.
        path: the path as written (percent-escapes not decoded), ``""`` when absent.
        options: the query options by name, each given once and allowed by the form.
        shown: the URL redacted, for every message and the backend's ``url``.
    """

    user: str | None
    password: str | None = field(repr=False)
    hosts: str
    path: str
    options: Mapping[str, str] = field(repr=False)
    shown: str


def split_url(url: str, form: URLForm, refused: Mapping[str, str] | None = None) -> URLParts:
    """Split ``url`` of ``form.scheme`` into credentials, hosts, path and options.

    Args:
        url: the URL as the user gave it.
        form: the scheme's shape and allowed options.
        refused: options refused with a reason of their own (instead of "unknown option").

    Raises:
        ConfigError: the URL is too long, has a space or non-ASCII character, a
            ``#fragment``, an option not allowed or given twice, or credentials that are not
            percent-encoded UTF-8 (key ``backend``).
    """
    shown = redact(url)
    if len(url) > MAX_URL_LENGTH:
        raise form.error(url, f"the URL is {len(url)} characters long (at most {MAX_URL_LENGTH})")
    if any(not "!" <= c <= "~" for c in url):
        # Which one is not said: it may be part of the password.
        raise form.error(url, "it has a space, control or non-ASCII character (percent-encode it)")
    prefix = form.scheme + "://"
    if url[: len(prefix)].lower() != prefix:
        raise form.error(url, f"it is not a {prefix} URL")
    rest = url[len(prefix) :]
    userinfo, at, after = rest.rpartition("@")
    user = password = None
    if at:
        if _OPTION_IN_CREDENTIALS.search(userinfo):
            raise form.error(
                url,
                "an '@' follows '?option=': write '@' in an option value as %40 "
                "(and '?' in a password as %3F)",
            )
        raw_user, colon, raw_password = userinfo.partition(":")
        user = _decode(raw_user, "the user name", form, url)
        password = _decode(raw_password, "the password", form, url) if colon else None
    location, hash_, _ = after.partition("#")
    if hash_:
        raise form.error(url, "a #fragment is not allowed (write '#' in a password as %23)")
    location, question, query = location.partition("?")
    hosts, slash, path = location.partition("/")
    options: dict[str, str] = {}
    for item in query.split("&") if question else ():
        if not item:
            continue
        raw_name, eq, raw_value = item.partition("=")
        name = unquote(raw_name)
        if refused and name in refused:
            raise form.error(url, f"option {name!r} is not allowed: {refused[name]}")
        if name not in form.options:
            shown_name = excerpt(name, 32) if _OPTION_NAME.fullmatch(name) else "(not shown)"
            raise form.error(url, f"unknown option {shown_name}")
        if name in options:
            raise form.error(url, f"option {name!r} is given twice")
        if not eq:
            raise form.error(url, f"option {name!r} has no value (write {name}=value)")
        options[name] = _decode(raw_value, f"the value of {name!r}", form, url)
    return URLParts(
        user=user,
        password=password,
        hosts=hosts,
        path=slash + path,
        options=options,
        shown=shown,
    )


def _decode(text: str, what: str, form: URLForm, url: str) -> str:
    try:
        return unquote(text, errors="strict")
    except UnicodeDecodeError:
        raise form.error(url, f"{what} is not percent-encoded UTF-8") from None


def parse_host(item: str, default_port: int, form: URLForm, url: str) -> tuple[str, int]:
    """``(host, port)`` of one ``host[:port]`` or ``[ipv6][:port]`` of ``url``.

    The host is returned without brackets; the port is 1-65535 (``default_port`` if absent).

    Raises:
        ConfigError: an empty or malformed host, an IPv6 address without brackets, or a
            port that is not a number from 1 to 65535 (key ``backend``).
    """
    if not item:
        raise form.error(url, "the host is empty")
    port_text: str | None
    if item.startswith("["):
        host, close, tail = item[1:].partition("]")
        if not close:
            raise form.error(url, "an IPv6 address lacks its closing ']'")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise form.error(url, f"{excerpt(host, 60)} is not an IPv6 address") from None
        if tail and not tail.startswith(":"):
            raise form.error(url, f"unexpected {excerpt(tail, 20)} after the IPv6 address")
        port_text = tail[1:] if tail else None
    else:
        if item.count(":") > 1:
            raise form.error(url, "an IPv6 address goes in brackets (write [::1]:port)")
        host, colon, text = item.partition(":")
        port_text = text if colon else None
        if not host:
            raise form.error(url, "the host is empty")
        if len(host) > 253 or not _HOSTNAME.fullmatch(host):
            raise form.error(url, f"the host {excerpt(host, 60)} is malformed")
    if port_text is None:
        return host, default_port
    if not (port_text.isascii() and port_text.isdigit() and len(port_text) <= 5):
        raise form.error(
            url, f"the port must be a number from 1 to 65535, got {excerpt(port_text, 20)}"
        )
    port = int(port_text)
    if not 0 < port < 65536:
        raise form.error(url, f"the port must be a number from 1 to 65535, got {port}")
    return host, port


def scheme_of(url: str) -> str:
    """The lower-case scheme of ``url``, or ``""`` when it has none (or a malformed one)."""
    scheme, sep, _ = url.partition("://")
    return scheme.lower() if sep and _SCHEME.fullmatch(scheme) else ""


class BackendURL:
    """A backend URL that shows itself only redacted.

    ``str()``, ``repr()``, f-strings and pydantic's serialisation (``model_dump``, JSON) all
    give :attr:`shown`; only :meth:`reveal` gives the URL itself, for opening the backend. A
    settings object holding one can therefore be printed or logged without leaking a
    password. It compares equal to another ``BackendURL`` or a ``str`` with the same text.
    """

    __slots__ = ("_url", "shown")

    def __init__(self, url: str) -> None:
        self._url = url
        #: The URL with credentials and secret option values replaced by ``***``.
        self.shown = redact(url)

    def reveal(self) -> str:
        """The URL as given, credentials included: pass it to the backend, never print it."""
        return self._url

    @property
    def scheme(self) -> str:
        """The lower-case scheme (``sqlite``, ``redis``, ...) or ``""``."""
        return scheme_of(self._url)

    def __str__(self) -> str:
        return self.shown

    def __repr__(self) -> str:
        return f"BackendURL({self.shown!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, BackendURL):
            return self._url == other._url
        if isinstance(other, str):
            return self._url == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._url)

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        """Validate from text (or a ``BackendURL``); serialise as the redacted text."""
        return core_schema.no_info_plain_validator_function(
            cls._coerce,
            json_schema_input_schema=core_schema.str_schema(),
            serialization=core_schema.plain_serializer_function_ser_schema(
                str, return_schema=core_schema.str_schema()
            ),
        )

    @classmethod
    def _coerce(cls, value: object) -> BackendURL:
        if isinstance(value, BackendURL):
            return value
        if isinstance(value, str):
            return cls(value)
        raise ValueError("must be a URL such as sqlite:///path/baton.db or redis://host:6379/0")


def reveal(url: str | BackendURL) -> str:
    """The text of ``url`` (a ``BackendURL`` revealed), for the parsers."""
    return url.reveal() if isinstance(url, BackendURL) else url


__all__ = [
    "MAX_URL_LENGTH",
    "PLAIN_OPTIONS",
    "BackendURL",
    "URLForm",
    "URLParts",
    "parse_host",
    "redact",
    "reveal",
    "scheme_of",
    "shown_excerpt",
    "split_url",
]
