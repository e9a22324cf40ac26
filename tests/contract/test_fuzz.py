"""Contract: mutual exclusion under contention, on every backend kind: racing holders never
lose a counter update nor claim a fire twice (ShedLock's ``FuzzTester``)."""

from __future__ import annotations

import threading
import time

from scheduler.backends.runs import Retention
from tests.contract.support import MakeBackend, at, holder, run_for


def test_concurrent_holders_never_overlap(make_backend: MakeBackend, election: str) -> None:
    """Racing holders (a backend each) never lose a counter update nor claim a fire twice."""
    threads_n, target = 4, 40
    backends = [make_backend() for _ in range(threads_n)]
    shared = {"counter": 0}
    claimed_keys: list[int] = []
    duplicates: list[int] = []
    increments = [0] * threads_n
    errors: list[BaseException] = []
    start = threading.Barrier(threads_n)
    deadline = time.monotonic() + 30.0

    def worker(index: int) -> None:
        backend, who = backends[index], holder(f"fuzz{index}")
        try:
            start.wait()
            while shared["counter"] < target and time.monotonic() < deadline:
                lease = backend.try_acquire(election, who, 5.0)
                if lease is None:
                    backend.wait_for_change(election, 0.05)
                    continue
                try:
                    value = shared["counter"]
                    if value >= target:
                        continue
                    run = run_for(lease, at(value), job="fuzz")
                    if backend.claim(lease, run, Retention(limit=1000)) is None:
                        duplicates.append(run.key)
                        continue
                    claimed_keys.append(run.key)
                    time.sleep(0.002)  # widen the read-modify-write window a lost lease would hit
                    shared["counter"] = value + 1
                    increments[index] += 1
                finally:
                    backend.release(lease)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=40.0)

    assert not errors, errors
    assert not any(thread.is_alive() for thread in threads), "a fuzz worker hung"
    assert not duplicates, f"fires claimed twice: {duplicates}"
    assert shared["counter"] == sum(increments) == target
    assert len(claimed_keys) == len(set(claimed_keys)) == target
    assert backends[0].claimed(election, "fuzz", at(0), at(target)) == set(claimed_keys)
