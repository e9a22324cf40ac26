"""The embedding API in one process, on the SQLite backend: start/stop, the context
managers, one replica per process, settings as the CLI reads them, and ``async def`` jobs on
Baton's own loop or on the caller's (``async with``)."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import tests.harness.sink as sink_module
from scheduler import BatonReplica, ConfigError, ReplicaAlreadyRunning
from scheduler.backends import from_url
from scheduler.backends.base import LeaseBackend
from tests.harness.replicas import wait_for
from tests.harness.sink import FencedSink

JOBS = ["tests.jobs.embedded"]


@pytest.fixture
def place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """A fresh backend file, cluster and sink for the jobs of tests.jobs.embedded."""
    monkeypatch.setenv("BATON_TEST_SINK", str(tmp_path / "sink.db"))
    monkeypatch.setattr(sink_module, "_shared", None)
    for name in ("BATON_CONFIG", "BATON_BACKEND", "BATON_CLUSTER", "BATON_REPLICA_ID"):
        monkeypatch.delenv(name, raising=False)
    yield {
        "backend": f"sqlite:///{tmp_path / 'baton.db'}",
        "cluster": f"embed-{uuid.uuid4().hex[:8]}",
    }
    shared = sink_module._shared
    if shared is not None:
        shared.close()


def make(place: dict[str, str], **extra: object) -> BatonReplica:
    return BatonReplica(
        jobs=JOBS,
        backend=place["backend"],
        cluster=place["cluster"],
        lease_ttl=30.0,
        shutdown_grace=2.0,
        configure_logging=False,
        stop_at_exit=False,
        **extra,
    )


def observer(place: dict[str, str]) -> LeaseBackend:
    return from_url(place["backend"], op_timeout=2.0)


def runs_by(sink_path: str, job: str, note: str | None = None) -> list[str]:
    sink = FencedSink(sink_path)
    try:
        return [
            w.tick
            for w in sink.writes()
            if w.job == job and w.accepted and (note is None or w.note == note)
        ]
    finally:
        sink.close()


def test_context_manager_leads_runs_async_job_and_releases_on_exit(
    place: dict[str, str], tmp_path: Path
) -> None:
    """`with BatonReplica(...)` leads, runs a plain and an async job (on Baton's own loop
    thread), and releases the lease on exit; stop() again is a no-op."""
    watch = observer(place)
    sink = str(tmp_path / "sink.db")
    try:
        with make(place) as replica:
            assert replica.replica_id.endswith(f"-{__import__('os').getpid()}")
            wait_for(
                lambda: (r := watch.read(place["cluster"])) and r.replica_id == replica.replica_id,
                20,
                "the embedded replica to lead",
            )
            wait_for(lambda: runs_by(sink, "embed.async", "baton-async"), 20, "an async run")
            wait_for(lambda: runs_by(sink, "embed.sync"), 20, "a plain run")
            assert replica.is_leader()
        assert watch.read(place["cluster"]) is None  # released, not left to expire
        assert not replica.running
        assert replica.stop() is True  # idempotent
        with pytest.raises(ReplicaAlreadyRunning, match="create a new BatonReplica"):
            replica.start()
    finally:
        watch.close()


def test_second_replica_in_one_process_is_refused(place: dict[str, str]) -> None:
    """One replica per process: a second start raises a clear error, the first runs on."""
    first = make(place).start()
    try:
        second = make(place)
        with pytest.raises(ReplicaAlreadyRunning, match="one per process"):
            second.start()
        assert first.running and first.start() is first  # start again: a no-op
    finally:
        assert first.stop()
    second = make(place).start()  # once the first has stopped, another may run
    assert second.stop()


def test_settings_come_from_the_config_model(place: dict[str, str], tmp_path: Path) -> None:
    """A bad keyword argument is one ConfigError naming the key and its source; a config
    file and BATON_* variables are read as `baton run` reads them."""
    with pytest.raises(ConfigError, match=r"lease_ttl.*BatonReplica\(\.\.\.\) arguments"):
        BatonReplica(jobs=JOBS, lease_ttl="soon")
    config = tmp_path / "baton.yaml"
    config.write_text(f"backend: {place['backend']}\ncluster: from-file\nshutdown_grace: 1\n")
    replica = BatonReplica(config, jobs=JOBS, configure_logging=False, stop_at_exit=False)
    assert replica.settings.cluster == "from-file"
    assert replica.settings.shutdown_grace == 1.0
    with pytest.raises(ConfigError, match="unknown key"):
        config.write_text("clustr: x\n")
        BatonReplica(config, jobs=JOBS)


def test_async_with_runs_async_jobs_on_the_callers_loop(
    place: dict[str, str], tmp_path: Path
) -> None:
    """Under `async with` (an ASGI lifespan), async jobs run on the caller's loop, and the
    loop stays responsive while the replica starts, leads and stops."""
    sink = str(tmp_path / "sink.db")
    loop_thread: list[str] = []

    async def main() -> None:
        loop_thread.append(threading.current_thread().name)
        async with make(place) as replica:
            assert replica.loop is asyncio.get_running_loop()
            for _ in range(400):  # the loop is free: these sleeps keep waking
                if runs_by(sink, "embed.async", loop_thread[0]):
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("no async run on the caller's loop within 20 s")

    asyncio.run(main())
    assert runs_by(sink, "embed.sync")


def test_forked_child_does_not_inherit_the_running_replica(place: dict[str, str]) -> None:
    """After a fork the child has no running replica (current() is None), and starting the
    parent's replica object there is refused, saying to start one after the fork."""
    import os

    from scheduler.ops.embed import current

    replica = make(place).start()
    try:
        pid = os.fork()
        if pid == 0:  # the child: report through the exit status only
            status = 3
            try:
                if current() is None:
                    status = 2
                    replica.start()
            except ReplicaAlreadyRunning as exc:
                status = 0 if "after the fork" in str(exc) else 4
            finally:
                os._exit(status)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert current() is replica  # the parent's is untouched
    finally:
        assert replica.stop()
