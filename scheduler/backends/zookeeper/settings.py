"""The ZooKeeper backend's session and TLS settings: the ``zookeeper:`` config section.

One type, :class:`ZooKeeperSettings`, serves both the config file (``scheduler.ops.config``
parses the section into it; its field bounds and descriptions are the config's error
messages) and the backend (which checks it again when opened directly). Rules between
fields, and the files named, are checked by :meth:`ZooKeeperSettings.check`, only once the
backend is ZooKeeper: a sqlite replica does not care that ``zookeeper.ca_file`` is missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from scheduler.errors import ConfigError
from scheduler.leadership.timings import LEASE_TTL_MIN, LeaseTimings

#: Seconds; the session timeout when neither the config nor the caller gives one (the
#: default ``lease_ttl``).
DEFAULT_SESSION_TIMEOUT = 10.0
#: Seconds; the default wait for a new session (never more than the session timeout): the
#: read commands' whole budget, so they give up on a dead ensemble in 2 s.
DEFAULT_CONNECTION_TIMEOUT = 2.0
#: Seconds: the bounds of the session and connection timeouts.
SESSION_TIMEOUT_MAX = 3600.0
CONNECTION_TIMEOUT_MIN, CONNECTION_TIMEOUT_MAX = 0.1, 600.0
#: File paths: no control characters (a newline in a path would forge log lines).
PATH_PATTERN = r"^[^\x00-\x1f\x7f]{1,4096}$"

OnSuspended = Literal["lose", "wait"]
ON_SUSPENDED: tuple[OnSuspended, ...] = ("lose", "wait")

FilePath = Annotated[str, Field(pattern=PATH_PATTERN)]
_PATH_RULE = "a file path of at most 4096 characters, without control characters"


class ZooKeeperSettings(BaseModel):
    """Session and TLS settings of the ZooKeeper backend (the ``zookeeper:`` section). Seconds.

    Attributes:
        session_timeout: how long ZooKeeper keeps a silent session, and with it this
            replica's latch node (default: ``lease_ttl`` in the config, the shortest
            allowed; :data:`DEFAULT_SESSION_TIMEOUT` for a backend opened directly; at most
            3600). It bounds failover after ``kill -9``: shorter fails over faster, but a GC
            pause or network hiccup longer than it costs the session.
        connection_timeout: how long a call may take, answers included, when a new session
            must be established first (the first one, or a replacement after expiry), if
            longer than the call's ``op_timeout``; default ``min(2, session_timeout)``, 0.1
            to 600. The read commands wait that long for an unreachable ensemble. At most
            ``session_timeout``: waiting longer for a connection cannot save a session that
            has expired meanwhile.
        on_suspended: ``lose`` (default, Curator's policy): leadership ends the moment the
            connection drops, which may cost a handover after a blip; ``wait``: keep leading
            through a short disconnection until the elector's renew deadline.
        tls: connect with TLS (implied by any of the file options). The server certificate
            is always verified, host name included.
        ca_file: PEM file of the CA(s) to verify the servers with (default: system CAs).
        cert_file: PEM client certificate, for servers that require client authentication.
        key_file: PEM private key of ``cert_file``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    session_timeout: float | None = Field(
        default=None, ge=LEASE_TTL_MIN, le=SESSION_TIMEOUT_MAX, allow_inf_nan=False
    )
    connection_timeout: float | None = Field(
        default=None, ge=CONNECTION_TIMEOUT_MIN, le=CONNECTION_TIMEOUT_MAX, allow_inf_nan=False
    )
    on_suspended: OnSuspended = "lose"
    tls: bool = False
    ca_file: FilePath | None = Field(default=None, description=_PATH_RULE)
    cert_file: FilePath | None = Field(default=None, description=_PATH_RULE)
    key_file: FilePath | None = Field(default=None, description=_PATH_RULE)

    @property
    def session_seconds(self) -> float:
        """``session_timeout``, or :data:`DEFAULT_SESSION_TIMEOUT` when unset."""
        if self.session_timeout is None:
            return DEFAULT_SESSION_TIMEOUT
        return self.session_timeout

    @property
    def use_tls(self) -> bool:
        """Whether connections use TLS."""
        return self.tls or any(f is not None for f in (self.ca_file, self.cert_file, self.key_file))

    @property
    def connect_wait(self) -> float:
        """Seconds a call may take when it must wait for a new session, unless its
        ``op_timeout`` is longer (``connection_timeout`` or its default)."""
        if self.connection_timeout is not None:
            return self.connection_timeout
        return min(DEFAULT_CONNECTION_TIMEOUT, self.session_seconds)

    def check(self) -> None:
        """Refuse settings whose fields contradict each other, or name missing files.

        Raises:
            ConfigError: naming the ``zookeeper.*`` key (and the other field involved).
        """
        session = self.session_seconds
        if self.connection_timeout is not None and self.connection_timeout > session:
            raise ConfigError(
                "zookeeper.connection_timeout",
                f"must not exceed zookeeper.session_timeout ({self.connection_timeout} s > "
                f"{session} s): a connection that takes longer cannot save "
                "the session, which has expired on the server by then",
            )
        if (self.cert_file is None) != (self.key_file is None):
            raise ConfigError(
                "zookeeper.cert_file" if self.cert_file is None else "zookeeper.key_file",
                "zookeeper.cert_file and zookeeper.key_file must be given together",
            )
        for key in ("ca_file", "cert_file", "key_file"):
            value = getattr(self, key)
            if value is not None and not Path(value).is_file():
                raise ConfigError(f"zookeeper.{key}", f"no such file: {value}")

    def for_lease(self, timings: LeaseTimings) -> ZooKeeperSettings:
        """These settings for a replica leading with ``timings``, checked.

        Returns:
            The settings with ``session_timeout`` filled in (``lease_ttl`` when unset).

        Raises:
            ConfigError: as :meth:`check`, or the session timeout is shorter than
                ``lease_ttl`` (naming both; see :func:`check_lease_timings`).
        """
        settings = self
        if self.session_timeout is None:
            settings = self.model_copy(update={"session_timeout": timings.lease_ttl})
        settings.check()
        check_lease_timings(settings, timings)
        return settings


def check_lease_timings(settings: ZooKeeperSettings, timings: LeaseTimings) -> None:
    """Refuse a session timeout under which a replica could lead after its session expired.

    A lease's local deadline is at most ``lease_ttl`` after a request the server answered,
    and the server expires a session no sooner than ``session_timeout`` after the last
    request it received; the deadline therefore ends first only if
    ``session_timeout >= lease_ttl``.

    Raises:
        ConfigError: naming ``zookeeper.session_timeout`` and ``lease_ttl``.
    """
    session = settings.session_seconds
    if session < timings.lease_ttl:
        raise ConfigError(
            "zookeeper.session_timeout",
            f"must be at least lease_ttl ({session} s < {timings.lease_ttl} s): "
            "the session, and with it the leader's latch node, could expire on the server "
            "while this replica still believes it leads",
        )


#: The name this type had in the backend before the config and the backend shared it.
ZooKeeperOptions = ZooKeeperSettings

__all__ = [
    "CONNECTION_TIMEOUT_MAX",
    "CONNECTION_TIMEOUT_MIN",
    "DEFAULT_CONNECTION_TIMEOUT",
    "DEFAULT_SESSION_TIMEOUT",
    "ON_SUSPENDED",
    "PATH_PATTERN",
    "SESSION_TIMEOUT_MAX",
    "FilePath",
    "OnSuspended",
    "ZooKeeperOptions",
    "ZooKeeperSettings",
    "check_lease_timings",
]
