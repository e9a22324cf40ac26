"""Baton's exceptions: one root, user errors that name the resource, and lease outcomes.

Three outcomes are kept apart throughout the code base: contention is an ordinary answer
(``None``), lost ownership raises :class:`LeaseLost`, success returns a value.
"""

from __future__ import annotations

import reprlib

#: The most characters of one bad value an error message shows.
EXCERPT_LIMIT = 200

_REPR = reprlib.Repr()
_REPR.maxlevel = 3
_REPR.maxstring = _REPR.maxother = EXCERPT_LIMIT
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 8


def printable(text: str) -> str:
    """``text`` with every non-printable character escaped (``\\n``, ``\\x00``, ``\\u202e``),
    so that echoing it can never start a new line or reorder the terminal's output."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def excerpt(value: object, limit: int = EXCERPT_LIMIT) -> str:
    """A short, printable ``repr`` of an untrusted ``value`` for an error message.

    Strings are quoted and cut at ``limit`` characters (saying how long they were); other
    values are rendered by :mod:`reprlib`, which never walks a whole huge or deeply nested
    structure (a YAML alias bomb, a 2 MB list), and then cut the same way.
    """
    if isinstance(value, str):
        shown = printable(repr(value[:limit]))
        if len(value) > limit or len(shown) > limit + 2:
            shown = shown[: limit + 1] + f"... ({len(value)} characters)"
        return shown
    try:
        shown = printable(_REPR.repr(value))
    except Exception:  # an int past Python's digit limit, a broken __repr__
        shown = f"<{type(value).__name__}>"
    return shown if len(shown) <= limit else shown[:limit] + "..."


class BatonError(Exception):
    """Root of every exception Baton raises on purpose."""


class UserError(BatonError):
    """A mistake in what the user gave us (config, job definitions, arguments).

    The CLI prints ``str(error)`` on one line and exits with status 2, without a traceback.
    """


class ConfigError(UserError, ValueError):
    """A config value is missing, unknown, of the wrong type or inconsistent with another.

    Args:
        key: the config key (dotted for nested keys) the problem is about.
        message: what is wrong with it.
    """

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(f"config key {excerpt(key, 80)}: {message}")


class JobDefinitionError(UserError, ValueError):
    """A ``@singleton_job`` definition is invalid (bad cron, duplicate name, ...)."""

    def __init__(self, job: str, message: str) -> None:
        self.job = job
        super().__init__(f"job {excerpt(job)}: {message}")


class JobsModuleError(UserError, ImportError):
    """A jobs module named in the config or on the command line cannot be imported."""

    def __init__(self, module: str, message: str) -> None:
        self.module = module
        super().__init__(f"jobs module {excerpt(module)}: {message}")


class BackendError(BatonError):
    """A problem talking to the coordination backend; ``backend`` is its redacted URL."""

    def __init__(self, backend: str, message: str) -> None:
        self.backend = backend
        super().__init__(f"backend {backend}: {message}")


class BackendUnavailable(BackendError, ConnectionError):
    """The backend did not answer in time or refused the connection.

    Transient by nature: the elector retries with capped backoff and never leads meanwhile.
    """


class BackendPermanentError(BackendError, UserError):
    """The backend answered, and the answer will not change until an operator acts.

    Credentials refused, an operation the backend's ACL denies, a read-only database,
    a schema from a newer Baton, nodes not protected by our ACL. Never retried as if
    transient: ``baton run`` exits 2 at start-up with the message; found later, the elector
    logs it once (``backend_refused``), stops leading and competing, re-checks it only every
    ``REFUSAL_RECHECK`` seconds, and ``/readyz`` reports it. Its subclasses say which.
    """


class BackendAuthError(BackendPermanentError, PermissionError):
    """The backend refused our credentials (authentication), or its ACL does not let them
    run an operation Baton needs (authorization: a Redis ACL, a ZooKeeper ACL)."""


class BackendReadOnlyError(BackendPermanentError, PermissionError):
    """The database file, its directory or its file system cannot be written."""


class BackendSchemaError(BackendPermanentError, ValueError):
    """The stored data has a schema version this Baton does not know (a newer Baton wrote
    it), or is not a Baton database at all."""


class BackendUnprotectedError(BackendPermanentError):
    """A node Baton relies on is not protected by Baton's ACL: anyone (or another
    identity) could create, change or delete what decides who leads and what ran.

    Args:
        backend: the redacted backend URL.
        path: the first such node.
        message: what is wrong and how to fix it.
    """

    def __init__(self, backend: str, path: str, message: str) -> None:
        self.path = path
        super().__init__(backend, message)


class LeaseLost(BatonError):
    """The lease is no longer held by the caller (expired, taken over or deleted).

    Args:
        name: the lease (election) name.
        reason: a short machine-friendly reason, e.g. ``"expired"`` or ``"not-holder"``.
    """

    def __init__(self, name: str, reason: str = "not-holder") -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"lease {name!r} lost: {reason}")


class ClaimLost(BatonError, LookupError):
    """A claim attempt's record is not there to act on: gone, another attempt's, or no
    longer ``claimed`` (already started, finished or given back).

    Args:
        job: the job name.
        scheduled_time: the fire instant, ISO-8601.
        reason: a short machine-friendly reason (``"gone"``, ``"other-attempt"``,
            ``"not-claimed"``).
    """

    def __init__(self, job: str, scheduled_time: str, reason: str) -> None:
        self.job = job
        self.scheduled_time = scheduled_time
        self.reason = reason
        super().__init__(f"job {job!r} fire {scheduled_time}: claim lost ({reason})")


class FireNotDue(BatonError):
    """The backend's clock says a fire is not due yet: this replica's clock runs ahead.

    Args:
        name: the lease (election) name.
        wait: seconds until the backend's clock reaches the fire (minus its allowance).
    """

    def __init__(self, name: str, wait: float) -> None:
        self.name = name
        self.wait = wait
        super().__init__(f"lease {name!r}: fire not due for {wait:.3f} s by the backend's clock")


class LeadershipLost(BatonError):
    """Raised by :meth:`JobContext.check` once this replica may no longer act as leader."""

    def __init__(self, job: str, reason: str) -> None:
        self.job = job
        self.reason = reason
        super().__init__(f"job {job!r}: leadership lost ({reason})")


class ReplicaAlreadyRunning(BatonError, RuntimeError):
    """A second embedded replica was started in a process that already runs one.

    One replica per process: N workers on M hosts are N x M replicas, each with its own
    presence record; two in one process would share its threads and its replica id.
    """

    def __init__(self, replica_id: str, message: str) -> None:
        self.replica_id = replica_id
        super().__init__(f"replica {excerpt(replica_id, 80)}: {message}")
