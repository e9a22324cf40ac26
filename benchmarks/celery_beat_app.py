"""The Celery app of the "Celery beat: Baton vs RedBeat" section (benchmarks/celery_beat.py).

One ``beat_schedule`` entry every second, whose task appends each execution to a SQLite
ledger: the instant it was sent for, when and by which beat it was sent. Every process is
configured by its environment (the section starts them):

* ``BENCH_CELERY_BROKER``: the broker URL; ``BENCH_CELERY_LEDGER``: the ledger file.
* ``BENCH_CELERY_ENTRY``: the entry's name (beat processes only); ``BENCH_CELERY_BEAT``: the
  beat's name, stamped into each message it sends.
* RedBeat's beats: ``BENCH_REDBEAT_URL`` (its Redis), ``BENCH_REDBEAT_LOCK_TIMEOUT``
  (seconds, ``redbeat_lock_timeout``). Baton's beats read their ``BATON_*`` variables.

What a beat stamps, in ``before_task_publish`` (measurement only, both contenders):
``bench_sent`` (Unix time of the publish), ``bench_beat`` (its name) and, for RedBeat,
``bench_due``: the instant the entry became due in the tick that sends it (the entry's
``last_run_at`` as read from Redis in that tick, plus its interval; the current time for a
first run). Baton's instant is its own ``baton_scheduled_time`` header.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from celery import Celery
from celery.signals import before_task_publish

from scheduler.integrations.celery import fencing_from_request

TASK = "bench.record"
HEADER_SENT = "bench_sent"
HEADER_BEAT = "bench_beat"
HEADER_DUE = "bench_due"
#: Seconds between two ticks of the entry.
PERIOD = 1.0

app = Celery("baton_celery_bench", broker=os.environ.get("BENCH_CELERY_BROKER", "memory://"))
app.conf.update(
    timezone="UTC",
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    # Beat wakes at least every second: RedBeat extends its lock once per wake (so the lock
    # timeout must exceed it) and a standby retries the lock every max interval.
    beat_max_loop_interval=PERIOD,
)

ENTRY = os.environ.get("BENCH_CELERY_ENTRY")
if ENTRY:
    app.conf.beat_schedule = {ENTRY: {"task": TASK, "schedule": PERIOD, "args": (ENTRY,)}}
if os.environ.get("BENCH_REDBEAT_URL"):
    app.conf.update(
        redbeat_redis_url=os.environ["BENCH_REDBEAT_URL"],
        # One RedBeat deployment per run: its own schedule keys and lock.
        redbeat_key_prefix=f"redbeat:{ENTRY}:",
        redbeat_lock_timeout=int(os.environ.get("BENCH_REDBEAT_LOCK_TIMEOUT", "5")),
    )

LEDGER_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    entry TEXT NOT NULL, instant TEXT, sent REAL, beat TEXT, token INTEGER, task_id TEXT,
    executed REAL
)
"""

#: The due instant of the send in progress (RedBeat's beat loop is one thread).
_due: datetime | None = None


if os.environ.get("BENCH_REDBEAT_URL"):
    # Imported only in RedBeat's beats: importing redbeat connects its lock acquisition to
    # every beat's ``beat_init``, Baton's beats included.
    from redbeat import RedBeatScheduler  # type: ignore[import-untyped]

    class MeasuredRedBeatScheduler(RedBeatScheduler):  # type: ignore[misc]
        """RedBeat's scheduler, unchanged but for noting each send's due instant."""

        def apply_async(self, entry: Any, *args: Any, **kwargs: Any) -> Any:
            global _due
            last = entry.last_run_at
            _due = datetime.now(UTC) if last is None else last + entry.schedule.run_every
            try:
                return super().apply_async(entry, *args, **kwargs)
            finally:
                _due = None


@before_task_publish.connect(weak=False)
def stamp(headers: dict[str, Any] | None = None, **_: Any) -> None:
    """Stamp the send time, the beat's name and (RedBeat) the due instant into the message."""
    if headers is None:
        return
    headers[HEADER_SENT] = time.time()
    headers[HEADER_BEAT] = os.environ.get("BENCH_CELERY_BEAT")
    if _due is not None:
        headers[HEADER_DUE] = _due.astimezone(UTC).isoformat()


def header(request: Any, name: str) -> Any:
    """A custom message header of a running task (``request.headers`` or an attribute)."""
    custom = getattr(request, "headers", None)
    value = custom.get(name) if isinstance(custom, Mapping) else None
    return getattr(request, name, None) if value is None else value


def open_ledger(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=10)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(LEDGER_SCHEMA)
    return conn


@app.task(bind=True, name=TASK)
def record(self: Any, entry: str) -> None:
    """Append one row per execution: the instant it was sent for, when and by whom."""
    send = fencing_from_request(self.request)
    instant = send.scheduled_time.isoformat() if send else header(self.request, HEADER_DUE)
    conn = open_ledger(os.environ["BENCH_CELERY_LEDGER"])
    try:
        with conn:
            conn.execute(
                "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    entry,
                    instant,
                    header(self.request, HEADER_SENT),
                    header(self.request, HEADER_BEAT),
                    send.token if send else None,
                    self.request.id,
                    time.time(),
                ),
            )
    finally:
        conn.close()
