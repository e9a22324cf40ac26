"""The Redis key layout. Per election name ``N`` (the hash tag ``{N}`` keeps them in one
Cluster slot, so every script touches a single slot)::

    baton:{N}:lease        string  the holder id; PX = lease TTL
    baton:{N}:info         hash    token, replica, host, since; same PX as the lease
    baton:{N}:token        string  the last token issued; never expires
    baton:{N}:epoch        string  "low:high": fires that may have been claimed in lost data
    baton:{N}:server       string  the run_id of the server of the last acquisition
    baton:{N}:acks         string  incremented by every acknowledged call (:mod:`.acks`)
    baton:{N}:runs:<job>   hash    fire key -> RunRecord JSON (its attempt and state live
                                   in the JSON; scripts read them with cjson)
    baton:{N}:runidx:<job> zset    fire key scored by fire key (orders history, trims it)
    baton:{N}:members      hash    replica id -> "<expiry ms, server clock>|<member JSON>"
    baton:{N}:controls     hash    control key -> value
    baton:{N}:events       pub/sub channel; ``released`` wakes waiting followers
"""

from __future__ import annotations

from scheduler.errors import ConfigError


def prefix(name: str) -> str:
    """``baton:{name}``, the prefix of every key of election ``name``.

    Raises:
        ConfigError: ``name`` has a brace, which would change the Cluster hash tag and
            split the keys over slots (key ``cluster``).
    """
    if "{" in name or "}" in name:
        raise ConfigError("cluster", f"election name {name!r} must not contain '{{' or '}}'")
    return f"baton:{{{name}}}"


def lease_keys(name: str) -> tuple[str, str, str]:
    """The lease, info and token keys of election ``name``."""
    base = prefix(name)
    return f"{base}:lease", f"{base}:info", f"{base}:token"


def run_keys(name: str, job: str) -> tuple[str, str]:
    """The runs hash and run index keys of ``job`` in election ``name``."""
    base = prefix(name)
    return f"{base}:runs:{job}", f"{base}:runidx:{job}"


def epoch_key(name: str) -> str:
    """The claim epoch key of election ``name`` (see ``ACQUIRE_LUA``)."""
    return f"{prefix(name)}:epoch"


def server_key(name: str) -> str:
    """The key holding the server run_id the last acquisition ran on (see ``ACQUIRE_LUA``)."""
    return f"{prefix(name)}:server"


def members_key(name: str) -> str:
    """The presence hash of election ``name``."""
    return f"{prefix(name)}:members"


def controls_key(name: str) -> str:
    """The operator controls hash of election ``name``."""
    return f"{prefix(name)}:controls"


def channel(name: str) -> str:
    """The pub/sub channel of election ``name`` (not checked: waiting never raises)."""
    return f"baton:{{{name}}}:events"


__all__ = [
    "channel",
    "controls_key",
    "epoch_key",
    "lease_keys",
    "members_key",
    "prefix",
    "run_keys",
    "server_key",
]
