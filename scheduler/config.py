"""Settings from a YAML file, then ``BATON_<KEY>`` environment variables, then CLI flags.

Every problem is reported as one :class:`~scheduler.errors.ConfigError` naming the key and
where the bad value came from. Unknown keys in the file are refused (with a suggestion);
unknown ``BATON_*`` variables are ignored, because Kubernetes injects ``BATON_PORT`` and the
like for a Service named ``baton``.
"""

from __future__ import annotations

import difflib
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from scheduler.backends import LeaseBackend, from_url
from scheduler.clock import SYSTEM_CLOCK, Clock
from scheduler.errors import ConfigError
from scheduler.timings import LeaseTimings

if TYPE_CHECKING:
    from scheduler.backends.zookeeper import ZooKeeperOptions

#: The embedded backend, in a file under the current directory.
DEFAULT_BACKEND = "sqlite:///.baton/baton.db"
ENV_PREFIX = "BATON_"


class ZooKeeperSettings(BaseModel):
    """The ``zookeeper:`` section, read only for a ``zookeeper://`` backend. Seconds."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)

    #: How long ZooKeeper keeps a silent session, and with it the leader's latch node
    #: (default: lease_ttl, the shortest allowed). It bounds failover after kill -9; shorter
    #: also means a GC pause or network blip of that length costs the session.
    session_timeout: float | None = Field(default=None, gt=0)
    #: How long a call waits for a new session (default min(5, session_timeout)); at most
    #: session_timeout.
    connection_timeout: float | None = Field(default=None, gt=0)
    #: When the connection drops: lose (default, Curator's policy) ends leadership at once;
    #: wait keeps leading through a short disconnection until renew_deadline.
    on_suspended: Literal["lose", "wait"] = "lose"
    #: TLS to the ensemble (implied by any file below); server certificates are always
    #: verified, host name included.
    tls: bool = False
    #: PEM CA file to verify the servers with (default: the system CAs).
    ca_file: str | None = None
    #: PEM client certificate and its key, for servers that require client certificates.
    cert_file: str | None = None
    key_file: str | None = None


class HttpSettings(BaseModel):
    """The ``http:`` section: where the replica serves /healthz, /readyz, /metrics, /status."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)

    #: TCP port; 0 (the default) serves nothing.
    port: int = Field(default=0, ge=0, le=65535)
    #: Address to bind (default all interfaces, as a pod needs for its probes).
    host: str = "0.0.0.0"


class Settings(BaseModel):
    """A replica's settings. Durations are in seconds."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)

    #: Backend URL: sqlite:///path (default, one host), redis://, rediss://, zookeeper://.
    backend: str = DEFAULT_BACKEND
    #: Election name; deployments sharing one backend need distinct clusters.
    cluster: str = Field(default="default", min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    #: This replica's name in logs and history (default: the host name, the pod name on k8s).
    replica_id: str = Field(default_factory=socket.gethostname, min_length=1)
    #: Modules (or packages) to import for @singleton_job definitions.
    jobs: list[str] = Field(default_factory=lambda: ["jobs"])
    #: See LeaseTimings for the trade-offs. Defaults: 10 s, ttl/3, 2*ttl/3.
    lease_ttl: float = Field(default=10.0, gt=0)
    renew_interval: float | None = Field(default=None, gt=0)
    renew_deadline: float | None = Field(default=None, gt=0)
    #: Seconds to wait for running jobs on SIGTERM before releasing anyway (default 30).
    #: Keep it below Kubernetes' terminationGracePeriodSeconds.
    shutdown_grace: float = Field(default=30.0, ge=0)
    #: json (containers), console (humans), auto (console on a TTY, else json).
    log_format: Literal["json", "console", "auto"] = "auto"
    #: Runs kept per job in the backend (older ones are trimmed; default 100).
    history_limit: int = Field(default=100, ge=1)
    #: Exit (status 3) after the abort hooks when leadership is lost involuntarily, so the
    #: orchestrator restarts a clean process (default false).
    exit_on_lost: bool = False
    #: Session and TLS options of a zookeeper:// backend (see ZooKeeperSettings).
    zookeeper: ZooKeeperSettings = Field(default_factory=ZooKeeperSettings)
    #: Health, readiness, metrics and status endpoints (see HttpSettings; off by default).
    http: HttpSettings = Field(default_factory=HttpSettings)

    def open_backend(self, op_timeout: float, clock: Clock = SYSTEM_CLOCK) -> LeaseBackend:
        """Open the configured backend with every call bounded by ``op_timeout`` seconds."""
        return from_url(
            self.backend, op_timeout=op_timeout, clock=clock, zookeeper=self.zookeeper_options()
        )

    def zookeeper_options(self) -> ZooKeeperOptions | None:
        """The ``zookeeper:`` options checked against the lease timings; ``None`` unless
        the backend is ZooKeeper.

        Raises:
            ConfigError: an option is invalid, or the session timeout is shorter than
                lease_ttl (naming both).
        """
        if not self.backend.startswith("zookeeper://"):
            return None
        from scheduler.backends.zookeeper import ZooKeeperOptions, check_lease_timings

        timings = self.timings()
        section = self.zookeeper
        options = ZooKeeperOptions(
            session_timeout=section.session_timeout or timings.lease_ttl,
            connection_timeout=section.connection_timeout,
            on_suspended=section.on_suspended,
            tls=section.tls,
            ca_file=section.ca_file,
            cert_file=section.cert_file,
            key_file=section.key_file,
        )
        check_lease_timings(options, timings)
        return options

    def timings(self) -> LeaseTimings:
        """The lease timings, validated against each other."""
        return LeaseTimings.of(self.lease_ttl, self.renew_interval, self.renew_deadline)


KEYS = tuple(Settings.model_fields)
#: Sections of nested keys; each key is also read from ``BATON_<SECTION>_<KEY>``.
NESTED = {
    "zookeeper": tuple(ZooKeeperSettings.model_fields),
    "http": tuple(HttpSettings.model_fields),
}


def _read_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("--config", f"file not found: {path}") from None
    except OSError as exc:
        raise ConfigError("--config", f"cannot read {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError("--config", f"{path} is not valid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            "--config", f"{path} must hold a mapping of keys, not {type(data).__name__}"
        )
    for key in data:
        if key not in KEYS:
            close = difflib.get_close_matches(str(key), KEYS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(str(key), f"unknown key in {path}{hint}")
    return data


def _read_env(environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key in KEYS:
        if key in NESTED:
            section = {
                sub: environ[name]
                for sub in NESTED[key]
                if (name := f"{ENV_PREFIX}{key.upper()}_{sub.upper()}") in environ
            }
            if section:
                values[key] = section
            continue
        raw = environ.get(ENV_PREFIX + key.upper())
        if raw is None:
            continue
        if key == "jobs":
            values[key] = [part.strip() for part in raw.split(",") if part.strip()]
        else:
            values[key] = raw
    return values


def load_settings(
    path: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build settings: defaults < YAML file < ``BATON_<KEY>`` env < ``overrides`` (CLI flags).

    Raises:
        ConfigError: naming the key and the source of the bad value.
    """
    env = os.environ if environ is None else environ
    if path is None and env.get(ENV_PREFIX + "CONFIG"):
        path = env[ENV_PREFIX + "CONFIG"]
    sources: dict[str, str] = {}
    merged: dict[str, Any] = {}
    if path is not None:
        for key, value in _read_file(Path(path)).items():
            merged[key], sources[key] = value, str(path)
    for key, value in _read_env(env).items():
        if key in NESTED:
            # Key by key over the file's section, each named by its own variable.
            file_section = merged.get(key)
            for sub in value:
                sources[f"{key}.{sub}"] = f"{ENV_PREFIX}{key.upper()}_{sub.upper()}"
            if isinstance(file_section, dict):
                value = {**file_section, **value}
        merged[key], sources[key] = value, ENV_PREFIX + key.upper()
    for key, value in (overrides or {}).items():
        if value is not None:
            merged[key], sources[key] = value, "command line"
    try:
        settings = Settings.model_validate(merged)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = [str(part) for part in error["loc"]]
        parts = loc[:2] if loc and loc[0] in NESTED else loc[:1]
        key = ".".join(parts) or "(config)"
        where = sources.get(key) or (sources.get(parts[0]) if parts else None)
        got = merged.get(parts[0]) if parts else None
        if len(parts) == 2:
            got = got.get(parts[1]) if isinstance(got, dict) else None
        detail = error["msg"]
        if got is not None:
            detail += f", got {got!r}"
        raise ConfigError(key, detail + (f" (from {where})" if where else "")) from None
    settings.timings()  # refuse inconsistent timings now, naming both fields
    settings.zookeeper_options()  # and a ZooKeeper session shorter than the lease
    return settings
