"""Baton inside an application the team already runs: a replica started and stopped from code.

``baton run`` is one replica per process; so is an embedded one. Every worker process of a
web server (each gunicorn or uvicorn worker, on every host) starts its own
:class:`BatonReplica`, with its own replica id, and they elect one leader among them exactly
as ``baton run`` processes do: N workers on M hosts are N x M replicas, and each tick still
fires once. A second replica in one process is refused (:class:`ReplicaAlreadyRunning`);
a child forked from a process that runs one may start its own (gunicorn forks workers).

Settings are the CLI's (:func:`scheduler.ops.config.load_settings`): a YAML file (``config=``
or ``BATON_CONFIG``), then ``BATON_<KEY>`` variables, then keyword arguments, each checked
as strictly and reported as one :class:`~scheduler.errors.ConfigError` naming the key.

Stopping is ``baton run``'s SIGTERM path: no new fire, running jobs get ``shutdown_grace``
seconds, then the lease is released so that another replica leads within milliseconds (a
graceful handover), presence is withdrawn and the backend closed. The embedded replica never
installs signal handlers: the host server's own shutdown (an ASGI lifespan's exit,
gunicorn's ``worker_exit``, ``atexit``) calls :meth:`BatonReplica.stop`.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import signal
import threading
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from scheduler.errors import BatonError, ReplicaAlreadyRunning, UserError
from scheduler.jobs.spec import JobSpec, load_jobs
from scheduler.ops.config import Settings, load_settings
from scheduler.ops.logs import configure, get_logger
from scheduler.ops.replica import Replica

__all__ = ["STOP_MARGIN", "BatonReplica", "current"]

#: Seconds :meth:`BatonReplica.stop` waits beyond ``shutdown_grace`` for the lease release,
#: presence withdrawal and backend close (each bounded by the backend's operation timeout).
STOP_MARGIN = 10.0
#: What error messages call the keyword arguments (the source of a bad value).
SOURCE = "BatonReplica(...) arguments"

_lock = threading.Lock()
#: The replica running in this process, if any (one per process).
_running: BatonReplica | None = None


def _forget_in_child() -> None:
    """After a fork: the parent's replica (its threads did not survive) is not ours."""
    global _lock, _running
    _lock = threading.Lock()
    _running = None


os.register_at_fork(after_in_child=_forget_in_child)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop running in this thread, if any."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def current() -> BatonReplica | None:
    """The replica started in this process (``None`` if none runs): what a gunicorn
    ``worker_exit`` hook or a Django shutdown handler stops."""
    return _running


class BatonReplica:
    """One embedded replica: joins the election, fires the jobs it wins, hands over on stop.

    Args:
        config: a YAML config file, as ``baton run --config`` (default: ``BATON_CONFIG``,
            else none).
        jobs: modules with ``@singleton_job`` functions (config key ``jobs``). Default: the
            config's, else the module ``jobs``.
        loop: the event loop ``async def`` jobs run on; pass the host application's running
            loop (``async with`` on a replica does so by itself). Default: Baton's own
            loop thread.
        configure_logging: set up Baton's structured logs on stderr as ``baton run`` does
            (process-wide structlog configuration); pass False when the host configures
            structlog itself.
        stop_at_exit: register :meth:`stop` with :mod:`atexit`, so that a process ending
            normally (``sys.exit``, the end of its main module) still hands over.
        per_process_id: unless ``replica_id=`` is passed here, append ``-<pid>`` to the
            configured replica id (default: the host name) when the replica starts, so that
            every worker of a server (which all see one config and one host name) is a
            replica of its own in ``baton status``, history and logs.
        **settings: any other config key (``backend=``, ``cluster=``, ``replica_id=``,
            ``lease_ttl=``, ``shutdown_grace=``, ``http={"port": 8080}``, ...); highest
            precedence.

    Raises:
        ConfigError: a bad setting (naming the key and where it came from).
        JobsModuleError, JobDefinitionError: a jobs module or a job in it is invalid.
        UserError: no ``@singleton_job`` found in the jobs modules.
    """

    def __init__(
        self,
        config: str | os.PathLike[str] | None = None,
        *,
        jobs: Sequence[str] | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        configure_logging: bool = True,
        stop_at_exit: bool = True,
        per_process_id: bool = True,
        **settings: Any,
    ) -> None:
        overrides = dict(settings)
        self._per_process_id = per_process_id and settings.get("replica_id") is None
        if jobs is not None:
            overrides["jobs"] = list(jobs)
        self.settings: Settings = load_settings(
            Path(config) if config is not None else None, overrides, overrides_from=SOURCE
        )
        self._base_id = self.settings.replica_id
        self._configure_logging = configure_logging
        self._stop_at_exit = stop_at_exit
        self.specs: list[JobSpec] = load_jobs(self.settings.jobs)
        if not self.specs:
            raise UserError(f"config key 'jobs': no @singleton_job found in {self.settings.jobs}")
        self.loop = loop
        self.replica: Replica | None = None
        #: Why the replica could not start in the background (another live replica uses
        #: its id, ...); ``None`` while all is well.
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._started = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._state = "new"  # new -> running -> stopped
        self._state_lock = threading.Lock()
        self.log = get_logger(replica=self.settings.replica_id)

    @property
    def replica_id(self) -> str:
        """The replica id (with its ``-<pid>`` suffix once started, see ``per_process_id``)."""
        return self.settings.replica_id

    def _own_id(self) -> None:
        """Give the settings this process's replica id (``per_process_id``)."""
        if not self._per_process_id:
            return
        base = self._base_id
        suffix = f"-{os.getpid()}"
        self.settings = self.settings.model_copy(
            update={"replica_id": base[: 253 - len(suffix)] + suffix}
        )
        self.log = get_logger(replica=self.settings.replica_id)

    @property
    def running(self) -> bool:
        """True from :meth:`start` until :meth:`stop`."""
        return self._state == "running"

    def is_leader(self) -> bool:
        """Whether this replica leads right now (computed locally, no network call)."""
        replica = self.replica
        return replica is not None and replica.elector.current_term() is not None

    def start(self) -> Self:
        """Start the replica: open and check the backend, then join the election.

        Returns once the backend answered the preflight (bounded by its operation timeout);
        the replica-id check (up to ``lease_ttl`` when a record with this id was left by a
        replica that died) and the election go on in the background: see
        :meth:`wait_started`. Calling it again while running does nothing.

        Raises:
            ReplicaAlreadyRunning: another replica runs in this process, or this one was
                started in another process (before a fork) or already stopped.
            BackendPermanentError: the backend refuses this replica for good.
            ConfigError: the HTTP port cannot be bound.
        """
        global _running
        with self._state_lock:
            if self._state == "running":
                if self._pid != os.getpid():
                    raise ReplicaAlreadyRunning(
                        self.replica_id,
                        "started in another process (before a fork?); start a replica in "
                        "each worker after the fork (gunicorn post_fork, not --preload)",
                    )
                return self
            if self._state == "stopped":
                raise ReplicaAlreadyRunning(
                    self.replica_id, "stopped for good; create a new BatonReplica to run again"
                )
            with _lock:
                if _running is not None:
                    raise ReplicaAlreadyRunning(
                        _running.replica_id,
                        "a Baton replica already runs in this process (one per process: "
                        "each worker process is one replica)",
                    )
                _running = self
            try:
                self._own_id()
                if self._configure_logging:
                    configure(
                        self.replica_id, self.settings.log_format, level=self.settings.log_level
                    )
                replica = Replica(self.settings, self.specs, loop=self.loop)
                try:
                    replica.preflight()  # refused for good: the backend is closed
                except BaseException:
                    if replica.http is not None:
                        replica.http.stop()  # the port is free again for a retry
                    raise
            except BaseException:
                with _lock:
                    _running = None
                raise
            self.replica, self._pid, self._state = replica, os.getpid(), "running"
            self._thread = threading.Thread(
                target=self._begin, args=(replica,), name="baton-embed", daemon=True
            )
            self._thread.start()
            if self._stop_at_exit:
                atexit.register(self.stop)
        return self

    def _begin(self, replica: Replica) -> None:
        try:
            if replica.begin(self._stop):
                self._started.set()
        except BaseException as exc:  # another live replica with this id, ...
            self.error = exc
            shown = str(exc) if isinstance(exc, BatonError) else type(exc).__name__
            self.log.error("replica_failed", error=shown)

    def wait_started(self, timeout: float | None = None) -> bool:
        """Wait until the replica has joined the election; whether it has (False on
        timeout, or when it could not start: see :attr:`error`)."""
        thread = self._thread
        if thread is None:
            return False
        thread.join(timeout)
        return self._started.is_set()

    def stop(self, timeout: float | None = None) -> bool:
        """Hand over and stop: no new fire, running jobs get ``shutdown_grace`` seconds, the
        lease is released, presence withdrawn, the backend closed. Idempotent; safe from
        any thread of the process that started the replica.

        Args:
            timeout: seconds to wait at most (default ``shutdown_grace`` + :data:`STOP_MARGIN`).

        Returns:
            True if the replica has stopped (or never ran), False if ``timeout`` passed
            first (the shutdown goes on in the background).
        """
        with self._state_lock:
            if self._state != "running" or self._pid != os.getpid():
                return True
            self._state = "stopped"
        if self._stop_at_exit:
            atexit.unregister(self.stop)
        if self.loop is not None and _running_loop() is self.loop:
            # Blocking the loop of async jobs: they cannot finish within shutdown_grace.
            self.log.warning(
                "replica_stop_blocks_event_loop",
                detail="use 'async with' or 'await asyncio.to_thread(replica.stop)'",
            )
        self._stop.set()
        limit = self.settings.shutdown_grace + STOP_MARGIN if timeout is None else timeout
        done = threading.Event()

        def shut_down() -> None:
            global _running
            try:
                assert self._thread is not None and self.replica is not None
                self._thread.join()  # the id check returns at once once stop is set
                if self._started.is_set():
                    self.replica.shutdown()
            except BaseException as exc:
                self.log.error("replica_stop_failed", error=type(exc).__name__)
            finally:
                with _lock:
                    if _running is self:
                        _running = None
                done.set()

        threading.Thread(target=shut_down, name="baton-embed-stop", daemon=True).start()
        return done.wait(limit)

    def run_until_signal(self, signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)) -> None:
        """For a plain worker process: start, block the main thread until one of
        ``signals``, then stop (a graceful handover). Call it from the main thread.

        A second signal while stopping ends the process at once (status 130), as with
        ``baton run``.
        """
        from scheduler.ops.cli.signals import SignalStop

        count = {"n": 0}

        def on_signal(signum: int) -> None:
            count["n"] += 1
            if count["n"] > 1:
                os._exit(130)
            flag.set()

        flag = SignalStop(on_signal, signals)
        try:
            self.start()
            flag.wait()
        finally:
            flag.close()
            self.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        """In an ASGI lifespan: ``async def`` jobs run on the application's loop, and the
        blocking start runs in a thread, never on the loop."""
        if self.loop is None:
            self.loop = asyncio.get_running_loop()
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # In a thread: the loop stays free to finish the async jobs being waited for.
        await asyncio.to_thread(self.stop)

    def asgi_app(self) -> Any:
        """The read-only status page as an ASGI application, to mount in the host app
        (``app.mount("/baton", replica.asgi_app())``); see :mod:`scheduler.ops.http.page`."""
        from scheduler.ops.http.page import asgi_status_app

        def source() -> dict[str, Any]:
            replica = self.replica
            if replica is None:
                raise LookupError("replica not started")
            return replica.status()

        return asgi_status_app(source)
