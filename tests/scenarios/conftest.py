"""Scenario tests (real ``baton run`` processes) run on one backend of each kind of store:
the embedded one, Redis, ZooKeeper, PostgreSQL, etcd and Redlock (three Redis primaries).
Redis Sentinel and Redis Cluster use the Redis backend's code with another client; they
pass the contract suite, their own fault tests (tests/faults/test_redis_ha.py) and chaos
runs, and are left out here to keep ``make test`` near 25 minutes (each scenario module on
them added ~3 minutes in all).
"""

from __future__ import annotations

import pytest

#: The backends the scenarios run on (a subset of tests/conftest.py's BACKEND_KINDS).
SCENARIO_KINDS = ("sqlite", "redis", "zookeeper", "postgresql", "etcd", "redlock")


@pytest.fixture(params=SCENARIO_KINDS)
def backend_kind(request: pytest.FixtureRequest) -> str:
    """The kind of backend a scenario runs on (one parametrization per kind)."""
    return str(request.param)
