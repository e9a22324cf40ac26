"""Presence and operator controls on etcd: a key per replica attached to an etcd lease of
its own (etcd deletes it when the replica stops announcing), and a key per control."""

from __future__ import annotations

import threading
from contextlib import suppress

from scheduler.backends.etcd.gateway import Gateway, b64, unb64
from scheduler.backends.etcd.keys import Keys
from scheduler.backends.etcd.ttl import lease_seconds
from scheduler.errors import BackendError
from scheduler.leadership.members import Member


class EtcdPresence:
    """The :class:`~scheduler.backends.base.Presence` role.

    Each announcement grants a fresh etcd lease of ``ceil(ttl)`` seconds (etcd raises it to
    its minimum), puts the record under it, and revokes the previous one: three calls every
    announcement interval, and a record that outlives a crash by the TTL only.
    """

    def __init__(self, gateway: Gateway, keys: Keys) -> None:
        self._gw = gateway
        self._keys = keys
        self._leases: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def announce(self, name: str, member: Member, ttl: float) -> None:
        """Put ``member``'s record under a new etcd lease of ``ttl`` seconds."""
        seconds = lease_seconds(ttl)
        lease_id = self._gw.grant(seconds)
        key = self._keys.members(name) + member.replica_id
        self._gw.call(
            "kv/put", {"key": b64(key), "value": b64(member.to_json()), "lease": str(lease_id)}
        )
        with self._lock:
            previous = self._leases.get((name, member.replica_id))
            self._leases[(name, member.replica_id)] = lease_id
        if previous is not None:
            with suppress(BackendError):
                self._gw.revoke(previous)

    def withdraw(self, name: str, replica_id: str) -> None:
        """Delete ``replica_id``'s record (and revoke its lease, if this process granted it)."""
        self._gw.call("kv/deleterange", {"key": b64(self._keys.members(name) + replica_id)})
        with self._lock:
            previous = self._leases.pop((name, replica_id), None)
        if previous is not None:
            with suppress(BackendError):
                self._gw.revoke(previous)

    def members(self, name: str) -> list[Member]:
        """The records etcd still keeps, by replica id (keys sort as ids do)."""
        answer = self._gw.range(self._keys.members(name), prefix=True)
        return [Member.from_json(unb64(kv["value"])) for kv in answer.get("kvs", [])]


class EtcdControls:
    """The :class:`~scheduler.backends.base.Controls` role."""

    def __init__(self, gateway: Gateway, keys: Keys) -> None:
        self._gw = gateway
        self._keys = keys

    def set_control(self, name: str, key: str, value: str | None) -> None:
        """Put, or with ``None`` delete, the control ``key``."""
        full = b64(self._keys.controls(name) + key)
        if value is None:
            self._gw.call("kv/deleterange", {"key": full})
        else:
            self._gw.call("kv/put", {"key": full, "value": b64(value)})

    def controls(self, name: str) -> dict[str, str]:
        """Every control of cluster ``name``."""
        prefix = self._keys.controls(name)
        answer = self._gw.range(prefix, prefix=True)
        return {
            unb64(kv["key"])[len(prefix) :]: unb64(kv.get("value", ""))
            for kv in answer.get("kvs", [])
        }


__all__ = ["EtcdControls", "EtcdPresence"]
