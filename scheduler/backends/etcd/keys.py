"""Where Baton keeps a cluster's state in etcd: every key under ``<prefix>/<cluster>/``.

::

    <prefix>/<cluster>/lease/holder          the holder's id; attached to its etcd lease;
                                             its create revision is the fencing token
    <prefix>/<cluster>/lease/info            {"replica", "host", "since"}; same lease
    <prefix>/<cluster>/runs/<job>/<fire>     a run record (JSON), one per claimed fire
    <prefix>/<cluster>/members/<replica>     a presence record; attached to a lease of its own
    <prefix>/<cluster>/controls/<key>        an operator control (the value as is)
    <prefix>/<cluster>/probe/<nonce>         written and deleted by a preflight only

A job name is percent-encoded (``/`` and ``%`` included), so one job's keys never start
with another's; a fire is its fire key plus :data:`FIRE_OFFSET`, zero-padded, so keys sort
as fires do. Cluster names cannot hold ``/`` (the config's charset).

The least-privilege etcd role is ``readwrite`` on the prefix range ``<prefix>/``.
"""

from __future__ import annotations

from urllib.parse import quote, unquote

#: Added to a fire key (ms since the epoch, possibly negative) before padding to 19 digits.
FIRE_OFFSET = 10**18


class Keys:
    """The keys of one backend's prefix.

    Args:
        prefix: the URL's key prefix (``/baton``), without a trailing ``/``.
    """

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def cluster(self, name: str) -> str:
        """Every key of cluster ``name`` starts with this."""
        return f"{self.prefix}/{name}/"

    def lease(self, name: str) -> str:
        """The prefix of the two lease keys (one range reads both)."""
        return f"{self.prefix}/{name}/lease/"

    def holder(self, name: str) -> str:
        """The leader key: the holder id; its create revision is the token."""
        return f"{self.prefix}/{name}/lease/holder"

    def info(self, name: str) -> str:
        """The leader's description, for observers."""
        return f"{self.prefix}/{name}/lease/info"

    def job(self, name: str, job: str) -> str:
        """The prefix of ``job``'s run records."""
        return f"{self.prefix}/{name}/runs/{quote(job, safe='')}/"

    def run(self, name: str, job: str, fire: int) -> str:
        """The run record of ``job``'s fire ``fire`` (a fire key)."""
        return self.job(name, job) + fire_part(fire)

    def members(self, name: str) -> str:
        """The prefix of the presence records."""
        return f"{self.prefix}/{name}/members/"

    def controls(self, name: str) -> str:
        """The prefix of the operator controls."""
        return f"{self.prefix}/{name}/controls/"

    def probe(self, name: str, nonce: str) -> str:
        """A preflight's own key (``nonce`` keeps replicas starting together apart)."""
        return f"{self.prefix}/{name}/probe/{nonce}"


def fire_part(fire: int) -> str:
    """The last segment of a run key: ``fire`` offset and zero-padded (sorts as numbers)."""
    return f"{fire + FIRE_OFFSET:019d}"


def fire_of(key: str) -> int:
    """The fire key of a run key."""
    return int(key.rsplit("/", 1)[1]) - FIRE_OFFSET


def job_of(key: str) -> str:
    """The job name of a run key."""
    return unquote(key.rsplit("/", 2)[1])


__all__ = ["FIRE_OFFSET", "Keys", "fire_of", "fire_part", "job_of"]
