"""The Redis preflight: every script and command a replica uses, played once on probe keys.

A Redis ACL can deny a command (``EVALSHA``, ``SCRIPT LOAD``, a command inside a script), a
key pattern or a pub/sub channel; each shows only when used, so the preflight uses each.
"""

from __future__ import annotations

import uuid
from contextlib import suppress
from datetime import UTC, datetime, timedelta

import redis as redis_lib

from scheduler.backends.redis.errors import translate_errors
from scheduler.backends.redis.keys import channel, controls_key, lease_keys, prefix
from scheduler.backends.redis.scripts import CLAIM_ALLOWANCE_MS, Scripts
from scheduler.backends.rules import TRIM_SCAN
from scheduler.backends.runs import RunRecord

#: The fire instant of the preflight's probe runs: long past, so never "not due", and
#: never inside a claim epoch (see ACQUIRE_LUA).
_PREFLIGHT_FIRE = datetime(2000, 1, 1, tzinfo=UTC)


def preflight(client: redis_lib.Redis, scripts: Scripts, url: str, name: str) -> None:
    """Run every script and command a replica of ``name`` uses once, on probe keys.

    Loads every script (needed after a server restart), then plays a whole term on keys of
    its own under the cluster's prefix (``baton:{name}:preflight:<random>:*``, same hash
    slot): acquire, renew, claim, start, finish, trim, unclaim, history, presence and
    controls, release (which publishes on the cluster's real channel: a spurious wake-up
    followers shrug off); it reads the real lease and controls and subscribes to the real
    channel once. The probe keys are deleted at the end. The user thus needs the keys
    ``baton:*`` (or ``baton:{<cluster>}:*``) and the channel ``baton:{<cluster>}:events``.

    Raises:
        BackendUnavailable: no answer in time.
        BackendAuthError: a command, key or channel is denied, or credentials refused.
    """
    lease_key, info_key, _ = lease_keys(name)
    base = f"{prefix(name)}:preflight:{uuid.uuid4().hex}"
    probe = {
        k: f"{base}:{k}"
        for k in ("lease", "info", "token", "epoch", "server", "runs", "index", "acks")
    }
    probe["members"], probe["controls"] = f"{base}:members", f"{base}:controls"
    holder = f"preflight-{uuid.uuid4().hex}"
    ttl_in_ms = 10_000
    first, second = (
        RunRecord("preflight", _PREFLIGHT_FIRE + timedelta(seconds=i), holder, 0, _PREFLIGHT_FIRE)
        for i in range(2)
    )
    lease, runs = [probe["lease"], probe["info"]], [probe["runs"], probe["index"]]
    allowance = CLAIM_ALLOWANCE_MS
    with translate_errors(url):
        try:
            # DEL first: the clean-up needs it, so nothing is left behind when it is denied.
            client.delete(*probe.values())
            for script in scripts.all():
                client.script_load(script.script)
            scripts.read(keys=[lease_key, info_key])
            client.hgetall(controls_key(name))
            _, token = scripts.acquire(
                keys=[*lease, probe["token"], probe["epoch"], probe["server"]],
                args=[holder, ttl_in_ms, 0, holder, "preflight", "", allowance],
            )
            token = str(token)
            # What an acknowledged call adds (min_replicas_ack, .acks): an INCR and a WAIT.
            client.incr(probe["acks"])
            client.execute_command("WAIT", 0, 1)  # type: ignore[no-untyped-call]
            scripts.renew(keys=lease, args=[holder, token, ttl_in_ms])
            for run, limit in ((first, 10), (second, 1)):  # the second trims the first
                scripts.claim(
                    keys=[*lease, *runs, probe["epoch"]],
                    args=[holder, token, str(run.key), run.to_json(), limit,
                          str(run.key), allowance, run.attempt, TRIM_SCAN],
                )  # fmt: skip
                if run is first:
                    started = run.started_now(_PREFLIGHT_FIRE)
                    scripts.start(
                        keys=[*lease, probe["runs"]],
                        args=[holder, token, str(run.key), run.attempt, started.to_json()],
                    )
                    done = started.finished("ok", _PREFLIGHT_FIRE, "")
                    scripts.finish(
                        keys=[probe["runs"]], args=[str(run.key), run.attempt, done.to_json()]
                    )
            scripts.unclaim(keys=runs, args=[str(second.key), second.attempt])
            scripts.history(keys=runs, args=[10])
            client.hget(probe["runs"], str(first.key))
            client.zrangebyscore(probe["index"], 0, second.key)
            scripts.announce(keys=[probe["members"]], args=[holder, "{}", ttl_in_ms])
            scripts.members(keys=[probe["members"]])
            client.hdel(probe["members"], holder)
            client.hset(probe["controls"], "preflight", "1")
            client.hdel(probe["controls"], "preflight")
            scripts.release(keys=lease, args=[holder, token, channel(name)])
            _probe_subscribe(client, channel(name))
        finally:
            with suppress(redis_lib.RedisError, OSError):
                client.delete(*probe.values())


def _probe_subscribe(client: redis_lib.Redis, events: str) -> None:
    """Subscribe to ``events`` on a connection of its own and wait for the answer."""
    pubsub = client.pubsub()  # type: ignore[no-untyped-call]  # a ClusterPubSub on a Cluster
    try:
        pubsub.subscribe(events)
        # One primary or Sentinel: the pool's socket timeout (op_timeout); a Cluster's
        # clients keep theirs per node, and 2 s is the default op_timeout.
        pool = getattr(client, "connection_pool", None)
        timeout = pool.connection_kwargs.get("socket_timeout") if pool is not None else None
        reply = pubsub.get_message(timeout=float(timeout or 2.0))
        if reply is None:
            raise redis_lib.TimeoutError(f"no answer to SUBSCRIBE {events}")
    finally:
        with suppress(redis_lib.RedisError, OSError):
            pubsub.close()


__all__ = ["preflight"]
