"""Presence on Redis: one hash per election, each field an expiry on the server's clock and
the member's JSON; expired fields are pruned when the members are listed."""

from __future__ import annotations

import redis as redis_lib

from scheduler.backends.redis.errors import translate_errors
from scheduler.backends.redis.keys import members_key
from scheduler.backends.redis.scripts import Scripts
from scheduler.backends.rules import ttl_ms
from scheduler.leadership.members import Member


class RedisPresence:
    """The :class:`~scheduler.backends.base.Presence` role on one client."""

    def __init__(self, client: redis_lib.Redis, scripts: Scripts, url: str) -> None:
        self._client = client
        self._scripts = scripts
        self._url = url

    def announce(self, name: str, member: Member, ttl: float) -> None:
        """Store ``member``'s presence with an expiry on the server's clock."""
        with translate_errors(self._url):
            self._scripts.announce(
                keys=[members_key(name)], args=[member.replica_id, member.to_json(), ttl_ms(ttl)]
            )

    def withdraw(self, name: str, replica_id: str) -> None:
        """Delete ``replica_id``'s presence."""
        with translate_errors(self._url):
            self._client.hdel(members_key(name), replica_id)

    def members(self, name: str) -> list[Member]:
        """Unexpired presence records (expired ones are pruned on the way), by replica id."""
        with translate_errors(self._url):
            reply = self._scripts.members(keys=[members_key(name)])
        return sorted((Member.from_json(raw) for raw in reply), key=lambda m: m.replica_id)


__all__ = ["RedisPresence"]
