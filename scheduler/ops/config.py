"""Settings from a YAML file, then ``BATON_<KEY>`` environment variables, then CLI flags.

Every problem is reported as one :class:`~scheduler.errors.ConfigError` naming the key and
where the bad value came from, echoing at most a short excerpt of it. Unknown keys in the
file are refused (with a suggestion); unknown ``BATON_*`` variables are ignored, because
Kubernetes injects ``BATON_PORT`` and the like for a Service named ``baton``.

Untrusted text is parsed once, here: the file is at most :data:`MAX_CONFIG_BYTES` of UTF-8
YAML without aliases or duplicate keys; the settings are validated strictly (a YAML bool or a
quoted string is not a number, no NaN or infinity), each number within documented bounds and
each name within a documented charset; ``BATON_*`` strings are read into the key's type here.
"""

from __future__ import annotations

import difflib
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import annotated_types
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.fields import FieldInfo

from scheduler.backends import BackendURL, LeaseBackend, check_url, from_url
from scheduler.backends.zookeeper.settings import ZooKeeperSettings
from scheduler.clock import SYSTEM_CLOCK, Clock
from scheduler.errors import ConfigError, excerpt, printable
from scheduler.leadership.timings import (
    LEASE_TTL_MAX,
    LEASE_TTL_MIN,
    RENEW_INTERVAL_MIN,
    LeaseTimings,
)

#: The embedded backend, in a file under the current directory.
DEFAULT_BACKEND = "sqlite:///.baton/baton.db"
ENV_PREFIX = "BATON_"
#: The largest config file read, in bytes (1 MiB; a real one is under 2 kB).
MAX_CONFIG_BYTES = 1 << 20

#: ``cluster``: 1 to 128 ASCII letters, digits, ``.``, ``_`` or ``-``, starting with a letter,
#: digit or ``_`` (it is a ZooKeeper node name, part of Redis keys and of every log line).
CLUSTER_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$"
#: ``replica_id``: 1 to 253 ASCII letters, digits, ``.``, ``_``, ``:`` or ``-``, starting with a
#: letter, digit or ``_``: any host name or Kubernetes pod name fits.
REPLICA_ID_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9._:-]{0,252}$"
#: ``jobs`` entries: dotted Python module names in ASCII, at most 200 characters each.
MODULE_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$"
#: ``http.host``: a host name or an IPv4/IPv6 address, without brackets.
HOST_PATTERN = r"^[A-Za-z0-9.:%_-]{1,253}$"
#: Seconds: the bounds of shutdown_grace (an hour is longer than any orchestrator waits).
SHUTDOWN_GRACE_MAX = 3600.0
#: The most runs kept per job (each is a record in the backend, read by ``baton history``).
HISTORY_LIMIT_MAX = 10_000
#: The most job pool workers (threads): beyond this, thread switching costs more than it
#: runs (a job that waits on I/O that long belongs in a process job or a queue).
MAX_WORKERS_MAX = 1024

ModuleName = Annotated[str, Field(min_length=1, max_length=200, pattern=MODULE_PATTERN)]


class HttpSettings(BaseModel):
    """The ``http:`` section: where the replica serves /healthz, /readyz, /metrics, /status."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    #: TCP port; 0 (the default) serves nothing.
    port: int = Field(default=0, ge=0, le=65535)
    #: Address to bind (default all interfaces, as a pod needs for its probes): a host name
    #: or an IP address, without brackets.
    host: str = Field(
        default="0.0.0.0", pattern=HOST_PATTERN, description="a host name or an IP address"
    )
    #: Publish the text of job exceptions in /status (default false: the exception type
    #: only, since messages can carry secrets and /status has no authentication).
    status_error_text: bool = False


class Settings(BaseModel):
    """A replica's settings. Durations are in seconds."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    #: Backend URL: sqlite:///path (default, one host), redis://, rediss://, zookeeper://,
    #: postgresql:// (README, "Backends"). It may carry a password, so it is never echoed in
    #: an error and shows itself only redacted (str, repr, model_dump); the URL is parsed by
    #: load_settings.
    backend: BackendURL = Field(
        default=BackendURL(DEFAULT_BACKEND),
        description="a backend URL such as sqlite:///path/baton.db or redis://host:6379/0",
    )
    #: Election name; deployments sharing one backend need distinct clusters.
    cluster: str = Field(
        default="default",
        pattern=CLUSTER_PATTERN,
        description="1 to 128 letters, digits, '.', '_' or '-', "
        "starting with a letter, digit or '_'",
    )
    #: This replica's name in logs and history (default: the host name, the pod name on k8s).
    replica_id: str = Field(
        default_factory=socket.gethostname,
        validate_default=True,
        pattern=REPLICA_ID_PATTERN,
        description="1 to 253 letters, digits, '.', '_', ':' or '-', "
        "starting with a letter, digit or '_'",
    )
    #: Modules (or packages) to import for @singleton_job definitions (1 to 64 of them).
    jobs: list[ModuleName] = Field(
        default_factory=lambda: ["jobs"],
        min_length=1,
        max_length=64,
        description="a list of 1 to 64 dotted Python module names",
    )
    #: See LeaseTimings for the trade-offs. Defaults: 10 s, ttl/3, 2*ttl/3; lease_ttl from 1
    #: to 3600 s; renew_deadline below lease_ttl and above 1.2 * renew_interval (>= 0.1 s).
    lease_ttl: float = Field(default=10.0, ge=LEASE_TTL_MIN, le=LEASE_TTL_MAX, allow_inf_nan=False)
    renew_interval: float | None = Field(
        default=None, ge=RENEW_INTERVAL_MIN, lt=LEASE_TTL_MAX, allow_inf_nan=False
    )
    renew_deadline: float | None = Field(
        default=None, ge=RENEW_INTERVAL_MIN, lt=LEASE_TTL_MAX, allow_inf_nan=False
    )
    #: Seconds to wait for running jobs on SIGTERM before releasing anyway (default 30, from
    #: 0 to 3600). Keep it below Kubernetes' terminationGracePeriodSeconds.
    shutdown_grace: float = Field(default=30.0, ge=0, le=SHUTDOWN_GRACE_MAX, allow_inf_nan=False)
    #: json (containers), console (humans), auto (console on a TTY, else json).
    log_format: Literal["json", "console", "auto"] = "auto"
    #: info (default): one ``fires_summary`` line per burst of fires, failures one line each;
    #: debug: also a line per fire (``job_started``, ``job_finished``, ``fire_paused``, ...);
    #: warning, error: problems only. See README "Logs".
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    #: Worker threads of the job pool: how many jobs may run at once on this replica
    #: (default 32, from 1 to 1024). Jobs are queued per job, not given a thread each; a
    #: fire due while every worker is busy waits for one (its lateness shows it), and a
    #: process job holds a worker while its child runs. More workers: more jobs that sleep
    #: or wait on I/O run side by side, at the cost of memory and thread switching (each
    #: thread has its own stack; CPU-bound Python jobs gain nothing from more than a few).
    max_workers: int = Field(default=32, ge=1, le=MAX_WORKERS_MAX)
    #: Runs kept per job in the backend (older ones are trimmed; default 100, from 1 to
    #: 10,000).
    history_limit: int = Field(default=100, ge=1, le=HISTORY_LIMIT_MAX)
    #: Exit (status 3) after the abort hooks when leadership is lost involuntarily, so the
    #: orchestrator restarts a clean process (default false).
    exit_on_lost: bool = False
    #: Session and TLS options of a zookeeper:// backend (ZooKeeperSettings, owned by the
    #: backend: scheduler/backends/zookeeper/settings.py).
    zookeeper: ZooKeeperSettings = Field(default_factory=ZooKeeperSettings)
    #: Health, readiness, metrics and status endpoints (see HttpSettings; off by default).
    http: HttpSettings = Field(default_factory=HttpSettings)

    def open_backend(
        self, op_timeout: float, clock: Clock = SYSTEM_CLOCK, *, create: bool = True
    ) -> LeaseBackend:
        """Open the configured backend with every call bounded by ``op_timeout`` seconds.

        ``create=False`` (read and operator commands) refuses a missing embedded database
        instead of creating it.
        """
        return from_url(
            self.backend,
            op_timeout=op_timeout,
            clock=clock,
            zookeeper=self.zookeeper_options(),
            create=create,
        )

    def zookeeper_options(self) -> ZooKeeperSettings | None:
        """The ``zookeeper:`` section checked against the lease timings, its session
        timeout defaulting to ``lease_ttl``; ``None`` unless the backend is ZooKeeper.

        Raises:
            ConfigError: an option is invalid, or the session timeout is shorter than
                lease_ttl (naming both).
        """
        if self.backend.scheme != "zookeeper":
            return None
        return self.zookeeper.for_lease(self.timings())

    def timings(self) -> LeaseTimings:
        """The lease timings, validated against each other."""
        return LeaseTimings.of(self.lease_ttl, self.renew_interval, self.renew_deadline)


KEYS = tuple(Settings.model_fields)
#: Sections of nested keys; each key is also read from ``BATON_<SECTION>_<KEY>``.
NESTED = {
    "zookeeper": tuple(ZooKeeperSettings.model_fields),
    "http": tuple(HttpSettings.model_fields),
}
_SECTIONS: dict[str, type[BaseModel]] = {"zookeeper": ZooKeeperSettings, "http": HttpSettings}
#: Where a value comes from when no source gave it.
_DEFAULT_SOURCES = {"replica_id": "the host name; set replica_id"}
#: Keys whose value is never echoed (a backend URL may carry a password).
_SECRET_KEYS = frozenset({"backend"})
#: Spellings of a boolean in a ``BATON_*`` variable.
_ENV_BOOLS = {
    "true": True, "1": True, "yes": True, "on": True,
    "false": False, "0": False, "no": False, "off": False,
}  # fmt: skip


class _ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader without aliases and without duplicate keys.

    Aliases are refused outright: a 2.5 kB "billion laughs" file expands into a structure
    of millions of nodes, and a config file has no need for them. A key given twice would
    silently keep only its last value.
    """

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not allowed", event.start_mark
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        mapping = super().construct_mapping(node, deep=deep)
        if len(mapping) < len(node.value):
            seen: set[Any] = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {excerpt(key, 80)}", key_node.start_mark
                    )
                seen.add(key)
        return mapping


def _read_file(path: Path, named: str = "--config") -> dict[str, Any]:
    """The YAML mapping in ``path`` (given by ``named``: the flag or ``BATON_CONFIG``)."""
    shown = excerpt(str(path))
    try:
        with path.open("rb") as stream:
            raw = stream.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(named, f"file not found: {shown}") from None
    except OSError as exc:
        raise ConfigError(named, f"cannot read {shown}: {exc.strerror}") from None
    except ValueError:  # a NUL in the path
        raise ConfigError(named, f"not a usable file name: {shown}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(named, f"{shown} is larger than {MAX_CONFIG_BYTES >> 20} MiB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            named, f"{shown} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at {exc.start})"
        ) from None
    try:
        data = yaml.load(text, Loader=_ConfigLoader)  # a safe loader (above)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None)
        why = f": {printable(problem)[:120]}" if isinstance(problem, str) else ""
        raise ConfigError(named, f"{shown} is not valid YAML{where}{why}") from None
    except RecursionError:
        raise ConfigError(named, f"{shown} is nested too deeply") from None
    except Exception as exc:  # e.g. an integer past Python's digit limit, a bad timestamp
        raise ConfigError(
            named, f"{shown} has a value YAML cannot read ({type(exc).__name__})"
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(named, f"{shown} must hold a mapping of keys, not {type(data).__name__}")
    for key in data:
        if key not in KEYS:
            label = key if isinstance(key, str) else excerpt(key)
            close = difflib.get_close_matches(label, KEYS, n=1) if len(label) <= 64 else []
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(label, f"unknown key in {shown}{hint}")
    return data


def _from_env(annotation: Any, raw: str) -> Any:
    """``raw`` read as the type of a key: numbers, booleans and comma-separated lists.

    What cannot be read stays a string, which strict validation then refuses by the key's
    type (naming the variable). Only ASCII is read as a number (``int()`` would also read
    Arabic-Indic or full-width digits).
    """
    if get_origin(annotation) is list:
        return [part.strip() for part in raw.split(",") if part.strip()]
    kinds = {arg for arg in (get_args(annotation) or (annotation,)) if arg is not type(None)}
    text = raw.strip()
    if kinds == {bool}:
        return _ENV_BOOLS.get(text.lower(), raw)
    if kinds & {int, float} and text.isascii():
        try:
            return int(text) if kinds == {int} else float(text)
        except ValueError:
            return raw
    return raw


def _read_env(environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key in KEYS:
        if key in NESTED:
            fields = _SECTIONS[key].model_fields
            section = {
                sub: _from_env(fields[sub].annotation, environ[name])
                for sub in NESTED[key]
                if (name := f"{ENV_PREFIX}{key.upper()}_{sub.upper()}") in environ
            }
            if section:
                values[key] = section
            continue
        raw = environ.get(ENV_PREFIX + key.upper())
        if raw is not None:
            values[key] = _from_env(Settings.model_fields[key].annotation, raw)
    return values


def _number_rule(field: FieldInfo) -> str:
    """``a number of seconds from 1 to 3600``: what a numeric key accepts, from its bounds."""
    kinds = set(get_args(field.annotation) or (field.annotation,))
    what = "a whole number" if int in kinds else "a number of seconds"
    low = high = ""
    for bound in field.metadata:
        if isinstance(bound, annotated_types.Ge):
            low = f"at least {bound.ge:g}"
        elif isinstance(bound, annotated_types.Gt):
            low = f"above {bound.gt:g}"
        elif isinstance(bound, annotated_types.Le):
            high = f"at most {bound.le:g}"
        elif isinstance(bound, annotated_types.Lt):
            high = f"below {bound.lt:g}"
    if low.startswith("at least") and high.startswith("at most"):
        return f"{what} from {low[9:]} to {high[8:]}"
    return " ".join([what, " and ".join(rule for rule in (low, high) if rule)]).strip()


def _field(parts: list[str]) -> FieldInfo | None:
    model: type[BaseModel] = _SECTIONS[parts[0]] if len(parts) == 2 else Settings
    return model.model_fields.get(parts[-1])


def _explain(error: Any, parts: list[str]) -> str:
    """The message for one pydantic error: the key's documented rule where it has one."""
    field = _field(parts)
    kind = str(error["type"])
    if kind == "extra_forbidden" and len(parts) == 2:
        close = difflib.get_close_matches(parts[1], NESTED[parts[0]], n=1)
        return "unknown key" + (f" (did you mean {parts[0]}.{close[0]}?)" if close else "")
    if field is None:
        return str(error["msg"])
    kinds = set(get_args(field.annotation) or (field.annotation,))
    if kinds & {int, float} and not kinds & {str, bool}:
        return f"must be {_number_rule(field)}"
    if kind == "bool_type":
        return "must be true or false"
    if field.description:
        return f"must be {field.description}"
    return str(error["msg"])


def load_settings(
    path: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    overrides_from: str = "command line",
) -> Settings:
    """Build settings: defaults < YAML file < ``BATON_<KEY>`` env < ``overrides`` (CLI flags).

    ``overrides_from`` names the overrides' source in errors (the Celery integration passes
    its app's conf).

    Raises:
        ConfigError: naming the key and the source of the bad value.
    """
    env = os.environ if environ is None else environ
    named = "--config"
    if path is None and env.get(ENV_PREFIX + "CONFIG"):
        path, named = env[ENV_PREFIX + "CONFIG"], ENV_PREFIX + "CONFIG"
    sources: dict[str, str] = {}
    merged: dict[str, Any] = {}
    if path is not None:
        for key, value in _read_file(Path(path), named).items():
            merged[key], sources[key] = value, excerpt(str(path))
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
            merged[key], sources[key] = value, overrides_from
    try:
        settings = Settings.model_validate(merged)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = [str(part) for part in error["loc"] if isinstance(part, str)]
        parts = loc[:2] if len(loc) > 1 and loc[0] in NESTED else loc[:1]
        key = ".".join(parts) or "(config)"
        where = sources.get(key) or (sources.get(parts[0]) if parts else None)
        where = where or _DEFAULT_SOURCES.get(key)
        detail = _explain(error, parts) if parts else str(error["msg"])
        if parts and parts[0] not in _SECRET_KEYS and error["type"] != "extra_forbidden":
            detail += f", got {excerpt(error.get('input'))}"
        raise ConfigError(key, detail + (f" (from {where})" if where else "")) from None
    try:
        check_url(settings.backend)  # parse the backend URL now, before anything is opened
    except ConfigError as exc:
        if "backend" not in sources:
            raise
        detail = str(exc).split(": ", 1)[1]  # after "config key 'backend'"
        raise ConfigError("backend", f"{detail} (from {sources['backend']})") from None
    settings.timings()  # refuse inconsistent timings now, naming both fields
    settings.zookeeper_options()  # and a ZooKeeper session shorter than the lease
    if settings.backend.scheme in ("etcd", "etcds"):
        from scheduler.backends.etcd.ttl import check_lease_ttl

        check_lease_ttl(settings.lease_ttl)  # and a lease shorter than etcd keeps one
    return settings
