"""The ``redlock://`` and ``rediss+redlock://`` URLs: the independent Redis primaries of
one Redlock group, parsed once into a :class:`RedlockTarget`.

The form is the Redis URL's (:func:`scheduler.backends.redis.url.parse_url` parses it, with
this scheme's form and allowed options), with 3 or 5 ``host:port`` items::

    redlock://[[user]:password@]h1:p1,h2:p2,h3:p3[/db][?option=value&...]
    rediss+redlock://...        (TLS, as rediss://, rediss+sentinel://, rediss+cluster://)

Every primary is reached with the same credentials, database and TLS settings. The number
of primaries must be odd, so that two majorities always intersect and no even split
leaves both halves without one: 3 (tolerates one primary down) or 5 (two). 1 is a single
primary (use ``redis://``), 7 and more add round-trip time for no safety the issue of a
lease needs; even numbers are refused, and so is a primary named twice (it would vote
twice). ``min_replicas_ack`` is not an option: Redlock's primaries have no replicas to
wait for.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from scheduler.backends.redis.url import TLS_OPTIONS, RedisTarget
from scheduler.backends.redis.url import parse_url as parse_redis_url
from scheduler.backends.urls import BackendURL, URLForm, reveal

#: The numbers of primaries a Redlock group may have.
PRIMARY_COUNTS = (3, 5)

_OPTIONS = ("db", "username", "password", "client_name")
_FORM = (
    "[[user]:password@]host:port,host:port,host:port[,host:port,host:port][/db][?option=value&...]"
)
_FORMS = {
    "redlock": URLForm("redlock", f"redlock://{_FORM}", _OPTIONS),
    "rediss+redlock": URLForm(
        "rediss+redlock", f"rediss+redlock://{_FORM}", _OPTIONS + TLS_OPTIONS
    ),
}
#: The Redlock schemes: plain, and over TLS (the server certificates always verified).
SCHEMES = tuple(_FORMS)


@dataclass(frozen=True, slots=True)
class RedlockTarget:
    """A parsed Redlock URL.

    Attributes:
        primaries: one single-primary :class:`~scheduler.backends.redis.url.RedisTarget`
            per ``host:port``, in the URL's order (3 or 5).
        shown: the URL with the password (and secret option values) replaced by ``***``.
    """

    primaries: tuple[RedisTarget, ...]
    shown: str

    @property
    def quorum(self) -> int:
        """How many primaries make a majority: ⌊N/2⌋ + 1."""
        return len(self.primaries) // 2 + 1


def parse_url(url: str | BackendURL) -> RedlockTarget:
    """Parse ``redlock://[[user]:password@]h1:p1,h2:p2,h3:p3[/db][?option=value&...]``.

    ``rediss+redlock://`` is the same over TLS (the ``rediss://`` options). Options: ``db``
    (instead of the path), ``username``, ``password``, ``client_name``; the rules of each
    are those of ``redis://`` (README, "Backend URLs").

    Raises:
        ConfigError: naming the problem, the redacted URL and the form (key ``backend``):
            a malformed URL, an option not allowed, a number of primaries other than 3 or
            5, or a primary named twice.
    """
    text = reveal(url)
    scheme = text.partition("://")[0].lower()
    form = _FORMS.get(scheme, _FORMS["redlock"])
    target = parse_redis_url(text, form=form, mode="redlock")
    count = len(target.hosts)
    if count not in PRIMARY_COUNTS:
        why = (
            "an even number has no majority that survives an even split"
            if count % 2 == 0
            else (
                "one primary is redis://" if count == 1 else "more primaries only add round trips"
            )
        )
        raise form.error(text, f"Redlock needs 3 or 5 primaries, got {count} ({why})")
    if len(set(target.hosts)) != count:
        raise form.error(text, "a primary is named twice (it would vote twice)")
    primaries = tuple(
        replace(target, host=host, port=port, mode="single", hosts=((host, port),))
        for host, port in target.hosts
    )
    return RedlockTarget(primaries=primaries, shown=target.shown)


__all__ = ["PRIMARY_COUNTS", "SCHEMES", "RedlockTarget", "parse_url"]
