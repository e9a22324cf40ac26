"""Presence on a Redlock group: announced on every primary, listed from a majority.

An announcement (and a withdrawal) goes to every primary and needs a majority of them to
answer; the list is the union of the unexpired records of every primary that answered (a
majority at least), so a replica whose announcement reached one primary still shows, and a
withdrawal that missed one primary is undone only until that record's TTL runs out.
"""

from __future__ import annotations

from scheduler.backends.redlock.primaries import OnPrimaries
from scheduler.backends.rules import check_ttl
from scheduler.leadership.members import Member


class RedlockPresence(OnPrimaries):
    """The :class:`~scheduler.backends.base.Presence` role on a Redlock group (arguments:
    :class:`~.primaries.OnPrimaries`)."""

    def announce(self, name: str, member: Member, ttl: float) -> None:
        """Store ``member``'s presence on every primary (expiry on each one's clock)."""
        check_ttl(ttl)
        self._on_majority(lambda p: p.presence.announce(name, member, ttl), "an announcement")

    def withdraw(self, name: str, replica_id: str) -> None:
        """Delete ``replica_id``'s presence on every primary."""
        self._on_majority(lambda p: p.presence.withdraw(name, replica_id), "a withdrawal")

    def members(self, name: str) -> list[Member]:
        """The union of the unexpired records of the answering primaries, by replica id
        (of two records of one replica, the latest announcement)."""
        answered = self._on_majority(lambda p: p.presence.members(name), "listing members")
        latest: dict[str, Member] = {}
        for _, members in answered:
            for member in members:
                seen = latest.get(member.replica_id)
                if seen is None or member.last_seen > seen.last_seen:
                    latest[member.replica_id] = member
        return [latest[replica] for replica in sorted(latest)]


__all__ = ["RedlockPresence"]
