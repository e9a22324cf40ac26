"""Baton's own records of the checked jobs, sampled during a chaos run: evidence for the checker.

A tick that never ran may have been claimed by a leader that was killed before it started
the job: claims are at most once, and nobody else may run it. Without Baton's records the
checker can only guess that from the timing (the fire in flight at the kill); with them it
knows. The backend keeps the newest ``Retention.limit`` (100) records of a job, so
:class:`ClaimRecorder` reads them every :data:`EVERY` seconds (a 1-second job's 100 records
span 100 s) through a connection no fault touches, and once more at the end, and writes
every record it saw (the newest state of each) to ``claims.jsonl`` in the run's directory.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Sequence
from pathlib import Path

from scheduler.backends import from_url
from scheduler.backends.runs import RunRecord
from scheduler.errors import BatonError

#: Seconds between two reads: well inside the 100 s a 1-second job's records span.
EVERY = 20.0
#: Records read per job and pass (the backend's default retention).
LIMIT = 100
#: The file the records are written to, in the run's directory.
FILE = "claims.jsonl"


class ClaimRecorder:
    """Samples the history of ``jobs`` in election ``cluster`` on a thread of its own.

    Args:
        url: a backend URL no fault cuts (the chaos run's own view of the store).
        cluster: the election name.
        jobs: the jobs whose records are kept.
        workdir: where ``claims.jsonl`` is written by :meth:`stop`.
    """

    def __init__(self, url: str, cluster: str, jobs: Sequence[str], workdir: Path) -> None:
        self._url = url
        self._cluster = cluster
        self._jobs = list(jobs)
        self._path = workdir / FILE
        self._seen: dict[tuple[str, int], RunRecord] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="claim-recorder", daemon=True)
        self._backend = from_url(url, op_timeout=2.0)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """A last read (the backend must still be up), then write the records."""
        self._stop.set()
        self._thread.join(timeout=60)
        self._read()
        with contextlib.suppress(BatonError):
            self._backend.close()
        self._path.write_text(
            "".join(run.to_json() + "\n" for _, run in sorted(self._seen.items()))
        )

    def abandon(self) -> None:
        """Stop sampling without a last read or a file (an interrupted run)."""
        self._stop.set()
        with contextlib.suppress(BatonError):
            self._backend.close()

    def _loop(self) -> None:
        while not self._stop.wait(EVERY):
            self._read()

    def _read(self) -> None:
        for job in self._jobs:
            try:
                runs = self._backend.history(self._cluster, job, LIMIT)
            except BatonError:
                continue  # the store is down or cut off right now: the next pass reads it
            for run in runs:
                self._seen[(run.job, run.key)] = run


def load(workdir: Path) -> dict[tuple[str, float], dict[str, object]]:
    """The records a run's recorder wrote, by (job, fire instant in Unix seconds); empty for
    a run without them."""
    path = workdir / FILE
    if not path.exists():
        return {}
    found: dict[tuple[str, float], dict[str, object]] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            run = RunRecord.from_json(line)
            found[(run.job, run.scheduled_time.timestamp())] = json.loads(line)
    return found
