"""The Celery app of tests/integrations: one entry every second, a task that writes a ledger.

Configured by the environment of each process (the test starts them): ``CELERY_TEST_BROKER``
(the broker URL), ``CELERY_TEST_LEDGER`` (a SQLite file the task appends to) and, for the
beat processes, ``CELERY_TEST_ENTRY`` (the name of the one ``beat_schedule`` entry).
Baton's own settings come from ``BATON_*`` variables. Each beat stamps the Unix time of every
publish into the message (:data:`HEADER_SENT`, measurement only), and the task records it.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Mapping
from typing import Any

from celery import Celery
from celery.signals import before_task_publish

from scheduler.integrations.celery import fencing_from_request

app = Celery("baton_celery_test", broker=os.environ.get("CELERY_TEST_BROKER", "memory://"))
app.conf.update(
    timezone="UTC",
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
)

ENTRY = os.environ.get("CELERY_TEST_ENTRY")
if ENTRY:
    app.conf.beat_schedule = {
        ENTRY: {
            "task": "tests.record",
            "schedule": 1.0,
            "args": (ENTRY,),
            # Every missed tick caught up by a new leader: the test can demand them all.
            "options": {"baton_catch_up": "all"},
        }
    }

#: Message header: the Unix time at which the beat published the message (a float).
HEADER_SENT = "test_sent"

LEDGER_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    entry TEXT NOT NULL, scheduled TEXT, token INTEGER, replica TEXT, key TEXT,
    task_id TEXT, worker_pid INTEGER, sent REAL
)
"""


@before_task_publish.connect(weak=False)
def stamp(headers: dict[str, Any] | None = None, **_: Any) -> None:
    """Stamp the publish time into the message (in the process that publishes it)."""
    if headers is not None:
        headers[HEADER_SENT] = time.time()


def sent_at(request: Any) -> float | None:
    """The publish time a running task's message carries, if any."""
    custom = getattr(request, "headers", None)
    value = custom.get(HEADER_SENT) if isinstance(custom, Mapping) else None
    value = getattr(request, HEADER_SENT, None) if value is None else value
    return float(value) if isinstance(value, int | float) else None


def open_ledger(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=10)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(LEDGER_SCHEMA)
    return conn


@app.task(bind=True, name="tests.record")
def record(self: Any, entry: str) -> None:
    """Append one row per execution: the entry, what the Baton headers say, when it was sent."""
    send = fencing_from_request(self.request)
    conn = open_ledger(os.environ["CELERY_TEST_LEDGER"])
    try:
        with conn:
            conn.execute(
                "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    entry,
                    send.scheduled_time.isoformat() if send else None,
                    send.token if send else None,
                    send.replica if send else None,
                    send.idempotency_key if send else None,
                    self.request.id,
                    os.getpid(),
                    sent_at(self.request),
                ),
            )
    finally:
        conn.close()
