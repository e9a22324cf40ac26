"""An example Celery project whose beat is Baton: run it on as many hosts as you like.

    cd config/celery
    celery -A proj worker -l info                                          # the workers
    BATON_REPLICA_ID=beat-1 celery -A proj beat -S scheduler.integrations.celery:BatonScheduler
    BATON_REPLICA_ID=beat-2 celery -A proj beat -S scheduler.integrations.celery:BatonScheduler

Each entry of ``beat_schedule`` is sent by the Baton leader only, once per instant. The
``charge`` task shows the worker side: the message's idempotency key and fencing token,
checked in the same transaction as the work, refuse a redelivered message and a send from a
deposed leader.
"""

from __future__ import annotations

import os
import sqlite3
from datetime import timedelta
from typing import Any

from celery import Celery
from celery.schedules import crontab

from scheduler import JobContext, SqlFence, StaleFencingToken, singleton_job
from scheduler.integrations.celery import fencing_from_request, send_fenced

REDIS = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")
app = Celery("proj", broker=f"{REDIS}/0")
app.conf.update(
    timezone="Europe/Berlin",  # crontab entries are read in this zone
    task_acks_late=True,  # a worker that dies mid-task gets the message again: guard it
    # Baton's settings (a BATON_<KEY> variable overrides each one):
    baton_backend=f"{REDIS}/1",  # Baton's own backend: here the broker's Redis, db 1
    baton_cluster="proj-beat",
    baton_lease_ttl=10,
    baton_catch_up="latest",  # default for every entry: a new leader sends the last missed tick
    baton_jobs=["proj"],  # also run this module's @singleton_job functions in beat
)
app.conf.beat_schedule = {
    "charge-nightly": {
        "task": "proj.charge",
        "schedule": crontab(minute=30, hour=2),  # 02:30 Berlin time, cron(8) at DST changes
        "args": ("nightly",),
        "options": {"queue": "billing", "baton_catch_up": "all"},  # every missed night
    },
    "refresh-every-30s": {"task": "proj.refresh", "schedule": timedelta(seconds=30)},
}

LEDGER = os.environ.get("PROJ_LEDGER", "proj-ledger.db")
fence = SqlFence(paramstyle="qmark")


def apply_once(conn: sqlite3.Connection, request: Any, work: str) -> bool:
    """Do ``work`` once per tick: False for a redelivery or a stale send (nothing written).

    Raises:
        ValueError: the message was not sent by Baton.
    """
    send = fencing_from_request(request)
    if send is None:
        raise ValueError("not sent by Baton")
    conn.execute("CREATE TABLE IF NOT EXISTS done (key TEXT PRIMARY KEY, work TEXT)")
    fence.create_table(conn.cursor())
    try:
        with conn:  # one transaction: the fence, the dedup record and the work
            cur = conn.cursor()
            fence.check(cur, "charges", send.token)  # a deposed leader's late send: refused
            cur.execute(
                "INSERT INTO done VALUES (?, ?) ON CONFLICT DO NOTHING",
                (send.idempotency_key, work),
            )
            if cur.rowcount == 0:
                return False  # a redelivery of a message already applied
            cur.execute("UPDATE done SET work = ? WHERE key = ?", (work, send.idempotency_key))
            return True  # (the real work goes here, in the same transaction)
    except StaleFencingToken:
        return False


@app.task(bind=True, name="proj.charge", acks_late=True)
def charge(self: Any, batch: str) -> bool:
    conn = sqlite3.connect(LEDGER)
    try:
        return apply_once(conn, self.request, f"charge {batch}")
    finally:
        conn.close()


@app.task(name="proj.refresh")
def refresh() -> None:
    """Harmless to repeat: no guard needed."""


@singleton_job(every="5m", name="proj.reconcile")
def reconcile(ctx: JobContext) -> None:
    """A Baton job that enqueues Celery work explicitly, with the same headers."""
    for region in ("eu", "us"):
        send_fenced(app, ctx, "proj.charge", (f"reconcile-{region}",), key=region)
