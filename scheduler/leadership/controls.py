"""Operator controls: the few durable strings ``baton resign``, ``pause`` and ``resume`` write,
and the leader's record of the fires a pause skipped.

Keys, per cluster (:meth:`~scheduler.backends.base.Controls.set_control`):

* ``resign``: the fencing token of the leader asked to step down (decimal). Only the term
  holding that token steps down, so a request left behind cannot depose a later leader;
  the leader that obeys it deletes it.
* ``pause:<job>``: the job is paused cluster-wide; the value says who asked
  (``{"by": "user@host"}``), never when (see :mod:`scheduler.firing.pauses`).
* ``paused-fires:<job>``: the fires a leader skipped because the job was paused; written by
  the leader, its value's format belongs to :mod:`scheduler.firing.pauses`.

Any process that can reach the backend can write a control, so the text is parsed as
untrusted input once, here, into :class:`OperatorControls`: a ``resign`` value that is not a
token asks nobody to resign. The backend role that stores them is
:class:`scheduler.backends.base.Controls`.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from scheduler.backends import base
from scheduler.errors import BackendError, BackendPermanentError
from scheduler.ops.logs import get_logger

#: The control naming the token of the leader asked to step down.
RESIGN = "resign"
#: ``pause:<job>``: the operator's intent only (who asked).
PAUSE_PREFIX = "pause:"
#: ``paused-fires:<job>``: the leader's record of the fires it skipped as paused.
PAUSED_FIRES_PREFIX = "paused-fires:"

# A fencing token as the CLI writes it: canonical decimal, so that parsing keeps equality.
_TOKEN = re.compile(r"0|[1-9][0-9]{0,30}", re.ASCII)


@dataclass(frozen=True, slots=True)
class OperatorControls:
    """The operator controls of one cluster, as read at one instant.

    Attributes:
        resign_token: the token of the leader asked to step down, or ``None``.
        paused: the jobs paused cluster-wide.
        paused_fires: per job, the raw ``paused-fires:<job>`` record (read by
            :func:`scheduler.firing.pauses.skipped_runs`).
    """

    resign_token: int | None = None
    paused: frozenset[str] = frozenset()
    paused_fires: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def parse(cls, raw: Mapping[str, str]) -> OperatorControls:
        """The controls stored as ``raw`` (as the backend returns them)."""
        value = raw.get(RESIGN)
        token = int(value) if value is not None and _TOKEN.fullmatch(value) else None
        paused = frozenset(k[len(PAUSE_PREFIX) :] for k in raw if k.startswith(PAUSE_PREFIX))
        fires = {
            k[len(PAUSED_FIRES_PREFIX) :]: v
            for k, v in raw.items()
            if k.startswith(PAUSED_FIRES_PREFIX)
        }
        return cls(token, paused, MappingProxyType(fires))

    def is_paused(self, job: str) -> bool:
        """True if an operator paused ``job``."""
        return job in self.paused

    def resign_requested(self, token: int) -> bool:
        """True if an operator asked the leader holding ``token`` to step down."""
        return self.resign_token == token

    def skipped_fires(self, job: str) -> str | None:
        """The raw record of ``job``'s fires skipped as paused, or ``None``."""
        return self.paused_fires.get(job)

    def without_resign(self) -> OperatorControls:
        """These controls once the resign request is cleared."""
        return OperatorControls(None, self.paused, self.paused_fires)


# -- what the operator's commands write -------------------------------------------------------


def read(store: base.Controls, cluster: str) -> OperatorControls:
    """Read and parse the controls of ``cluster``.

    Raises:
        BackendError: no answer, or refused.
    """
    return OperatorControls.parse(store.controls(cluster))


def request_resign(store: base.Controls, cluster: str, token: int) -> None:
    """Ask the leader holding ``token`` to step down (``baton resign``).

    Raises:
        BackendError: no answer, or refused.
    """
    store.set_control(cluster, RESIGN, str(token))


def pause(store: base.Controls, cluster: str, job: str, by: str) -> None:
    """Pause ``job`` cluster-wide, recording who asked (``by``), never when.

    Raises:
        BackendError: no answer, or refused.
    """
    store.set_control(cluster, PAUSE_PREFIX + job, json.dumps({"by": by}))


def resume(store: base.Controls, cluster: str, job: str) -> None:
    """Lift the pause of ``job``; the fires it skipped stay skipped.

    Raises:
        BackendError: no answer, or refused.
    """
    store.set_control(cluster, PAUSE_PREFIX + job, None)


# -- what a replica reads ---------------------------------------------------------------------


class LiveControls:
    """The controls of one cluster as a replica last read them.

    The elector refreshes them with its presence (every renew interval, on leader and
    followers alike, so a new leader already knows which jobs are paused); the runner reads
    :attr:`current` and refreshes them before a catch-up.

    Args:
        backend: where the controls are stored.
        cluster: the election name.
        report: called with a permanent backend error (it ends leadership).
        replica_id: for the log lines.
    """

    def __init__(
        self,
        backend: base.Controls,
        cluster: str,
        report: Callable[[BackendError], None],
        replica_id: str,
    ) -> None:
        self._backend = backend
        self._cluster = cluster
        self._report = report
        self._log = get_logger(replica=replica_id)
        self._lock = threading.Lock()
        self._current = OperatorControls()

    @property
    def current(self) -> OperatorControls:
        """The controls as last read (none until the first read)."""
        return self._current

    def refresh(self) -> bool:
        """Re-read the controls now.

        Returns:
            True if they were read; False if not (the last ones read are kept; a permanent
            refusal is reported, a transient failure logged as ``controls_unavailable``).
        """
        try:
            fresh = read(self._backend, self._cluster)
        except BackendPermanentError as exc:
            self._report(exc)
        except BackendError as exc:
            self._log.warning("controls_unavailable", error=str(exc))
        else:
            with self._lock:
                self._current = fresh
            return True
        return False

    def clear_resign(self) -> None:
        """Delete an obeyed resign request, so that a later term is not affected; best effort
        (a failure is logged as ``control_update_failed``)."""
        try:
            self._backend.set_control(self._cluster, RESIGN, None)
        except BackendError as exc:
            self._log.warning("control_update_failed", error=str(exc))
        with self._lock:
            self._current = self._current.without_resign()
