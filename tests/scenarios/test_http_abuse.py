"""The HTTP endpoints of a real replica under abuse: thousands of idle connections under a
256-descriptor limit, slowloris, a flood of slow requests (scheduler/ops/http/)."""

from __future__ import annotations

import resource
import select
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from scheduler.ops import http
from tests.harness.http_replica import HttpReplica, read_all, status_code
from tests.harness.idle_flood import IdleFlood
from tests.harness.process_server import HOST
from tests.harness.replicas import wait_for

pytestmark = pytest.mark.slow

IDLE_CONNECTIONS = 3000
#: The descriptor limit of the replica (a small container's ``ulimit -n``).
NOFILE = 256
#: Threads a replica with two jobs may have, whatever its HTTP clients do.
MAX_THREADS = 20


@pytest.fixture
def replica(tmp_path: Path) -> Iterator[HttpReplica]:
    r = HttpReplica(tmp_path / "replica", nofile=NOFILE)
    try:
        yield r
    finally:
        assert r.stop() == 0
        assert r.log_problems() == [] and r.stdout() == ""


@pytest.fixture
def flood_fds() -> None:
    """Room for the flood's connections in its own process (it raises its soft limit)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < IDLE_CONNECTIONS + 64:
        pytest.skip(f"needs {IDLE_CONNECTIONS + 64} file descriptors, the hard limit is {hard}")


def test_healthz_answers_while_3000_idle_connections_are_held(
    replica: HttpReplica, flood_fds: None, tmp_path: Path
) -> None:
    """3,000 idle connections (from another process) against a 256-fd replica: every probe
    (during and after) is 200 within a second; threads, descriptors and memory stay bounded."""
    rss = replica.proc_status("VmRSS")
    probes: list[tuple[int, float]] = []
    peak = {"threads": 0, "fds": 0}
    done = threading.Event()

    def probe() -> None:
        while not done.is_set():
            probes.append(replica.timed_healthz())
            peak["threads"] = max(peak["threads"], replica.proc_status("Threads"))
            peak["fds"] = max(peak["fds"], replica.open_fds())
            time.sleep(0.02)

    prober = threading.Thread(target=probe)
    prober.start()
    flood = IdleFlood(HOST, replica.port, IDLE_CONNECTIONS, tmp_path)
    try:
        flood.wait_held(60)
        during_flood = len(probes)
        after = [replica.timed_healthz() for _ in range(20)]
        probed = len(probes)
        # Every connection held while the prober probes 20 more times.
        wait_for(lambda: len(probes) >= probed + 20, 30, "20 probes with every connection held")
        assert flood.held
    finally:
        done.set()
        prober.join()
        grown = replica.proc_status("VmRSS") - rss
        flood.stop()
    during = probes + after
    assert during_flood >= 10, "too few probes while connections were being opened"
    assert all(code == 200 for code, _ in during), [c for c, _ in during if c != 200][:5]
    slowest = max(seconds for _, seconds in during)
    assert slowest < 1.0, f"a probe took {slowest:.3f} s"
    # Main, elector, watchdog, fire loop, maintenance, job and hook pools, HTTP: the same few
    # threads however many connections (a thread per connection made 3,007).
    assert peak["threads"] <= MAX_THREADS, f"{peak['threads']} threads"
    assert peak["fds"] < NOFILE - 64, f"{peak['fds']} descriptors open"
    assert grown < 10_000, f"resident memory grew by {grown} kB"


def test_slowloris_is_cut_at_the_head_timeout(replica: HttpReplica) -> None:
    """20 connections sending one header byte a second are answered 408 and closed at the
    head timeout; meanwhile /status and /metrics answer at once (no worker is held)."""
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 100
    ended: list[float] = []
    answers: list[bytes] = []
    sent: dict[int, int] = {}  # bytes sent so far, per trickling thread

    def trickle() -> None:
        with replica.connect() as sock:
            began = time.monotonic()
            try:
                for byte in request:
                    sock.sendall(bytes([byte]))
                    sent[threading.get_ident()] = sent.get(threading.get_ident(), 0) + 1
                    if select.select([sock], [], [], 1.0)[0]:
                        break  # the server answered (and closes)
            except OSError:
                pass  # closed by the server
            answers.append(read_all(sock))
            ended.append(time.monotonic() - began)

    trickling = [threading.Thread(target=trickle) for _ in range(20)]
    for thread in trickling:
        thread.start()
    # Every connection has trickled two bytes (a second into its head) before the probes.
    wait_for(lambda: len(sent) == 20 and min(sent.values()) >= 2, 30, "20 connections trickling")
    for path in ("/status", "/metrics", "/healthz"):
        began = time.monotonic()
        assert replica.get(path)[0] == 200
        assert time.monotonic() - began < 1.0, path
    for thread in trickling:
        thread.join(timeout=30)
    assert len(ended) == 20
    assert max(ended) < http.HEAD_TIMEOUT + 1.0, f"held for {max(ended):.1f} s"
    assert all(status_code(answer) == 408 for answer in answers), answers[:2]
