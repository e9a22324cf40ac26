"""The HTTP endpoints of a real replica: probes, metrics and status."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.redis_server import RedisServer, free_port
from tests.harness.replicas import Cluster, wait_for

#: The per-fire lines (job_started, fire_paused, ...) this test reads are at debug level.
PER_FIRE_LINES = {"BATON_LOG_LEVEL": "debug"}

pytestmark = pytest.mark.slow

METRICS = (
    "baton_is_leader",
    "baton_leader_transitions_total",
    "baton_lease_renewals_total",
    "baton_lease_renew_latency_seconds_bucket",
    "baton_lease_time_left_seconds",
    "baton_job_runs_total",
    "baton_job_duration_seconds_bucket",
    "baton_fire_lateness_seconds_bucket",
    "baton_claims_total",
)


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.cleanup()


def test_endpoints_of_a_leader_and_readiness_through_an_outage(
    own_redis: RedisServer, election: str, tmp_path: Path
) -> None:
    """/healthz, /readyz, /metrics and /status answer; readiness follows the backend."""
    port = free_port()
    cluster = Cluster(own_redis.url, election, tmp_path / "cluster", env=PER_FIRE_LINES)
    try:
        cluster.start(1, lease_ttl=3, http_host="127.0.0.1", http_port=port)
        leader = cluster.wait_leader(timeout=15)
        wait_for(lambda: get(port, "/readyz")[0] == 200, 15, "readiness")
        assert get(port, "/healthz") == (200, "ok\n")
        wait_for(lambda: cluster.replicas["r1"].events("job_finished"), 15, "a finished run")
        wait_for(lambda: "baton_lease_renewals_total" in get(port, "/metrics")[1], 10, "a renewal")

        code, text = get(port, "/metrics")
        assert code == 200
        for name in METRICS:
            assert name in text, name
        assert "baton_is_leader 1.0" in text
        assert 'baton_job_runs_total{job="test.tick",outcome="ok"}' in text
        assert 'baton_claims_total{result="claimed"}' in text

        def stored_ok() -> bool:  # outcomes are stored in batches, just after the run
            last = json.loads(get(port, "/status")[1])["jobs"][0]["last_run"]
            return last is not None and last["outcome"] == "ok"

        wait_for(stored_ok, 10, "a run's outcome in /status")
        code, body = get(port, "/status")
        doc = json.loads(body)
        assert code == 200 and doc["replica_id"] == "r1" and doc["is_leader"] is True
        assert doc["token"] == leader.token and 0 < doc["lease_time_left"] <= 3
        (job,) = doc["jobs"]
        assert job["name"] == "test.tick" and job["schedule"] == "every 2s"
        assert job["last_run"]["outcome"] == "ok" and job["next_fire"]
        assert get(port, "/nope")[0] == 404

        own_redis.stop()
        wait_for(lambda: get(port, "/readyz")[0] == 503, 15, "not ready during the outage")
        assert "not reachable" in get(port, "/readyz")[1]
        assert get(port, "/healthz")[0] == 200, "an outage is no reason to restart the pod"
        wait_for(lambda: "baton_is_leader 0.0" in get(port, "/metrics")[1], 10, "step-down")
        own_redis.restart()
        wait_for(lambda: get(port, "/readyz")[0] == 200, 20, "ready again")
    finally:
        cluster.close()
