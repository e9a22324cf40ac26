"""The CLI's stop flag wakes the main thread whichever thread the signal lands on."""

from __future__ import annotations

import signal
import threading

from scheduler.ops.cli.signals import SignalStop


def test_a_signal_caught_by_a_worker_thread_wakes_the_main_thread() -> None:
    # A process-directed SIGTERM may be delivered to any thread; here it is sent to a worker on
    # purpose. A main thread in threading.Event.wait() would not wake until its timeout.
    assert threading.current_thread() is threading.main_thread()
    seen: list[int] = []

    def on_signal(signum: int) -> None:
        seen.append(signum)
        stop.set()

    stop = SignalStop(on_signal, (signal.SIGUSR1,))
    try:
        # A Timer thread: the signal is sent once the main thread is (very likely) waiting; if
        # it came earlier the handler would simply run before the wait.
        worker = threading.Timer(
            0.2, lambda: signal.pthread_kill(threading.get_ident(), signal.SIGUSR1)
        )
        worker.start()
        assert stop.wait(timeout=30), "the main thread did not wake on the signal"
        worker.join()
        assert seen == [signal.SIGUSR1]
    finally:
        stop.close()
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL  # handlers restored


def test_set_from_another_thread_wakes_a_waiting_main_thread() -> None:
    stop = SignalStop(lambda signum: None, ())
    try:
        threading.Timer(0.05, stop.set).start()
        assert stop.wait(timeout=30)
        assert stop.is_set()
    finally:
        stop.close()


def test_wait_times_out_when_nothing_happens() -> None:
    stop = SignalStop(lambda signum: None, ())
    try:
        assert not stop.wait(timeout=0.05)
        assert not stop.is_set()
    finally:
        stop.close()
