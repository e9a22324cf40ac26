"""The node layout of the ZooKeeper backend, and the rules for its node names.

Under the chroot ``R`` of the URL (default ``/baton``) and per election ``N`` (the
``cluster``)::

    R/N/latch/<guid>-latch-<seq>  ephemeral sequential, one per replica taking part; data:
                                  {holder: sha256(holder id), replica, host, since}
    R/N/leader                    persistent, the leader's own note of its term:
                                  {token, replica, host, since}; read by observers only
    R/N/runs/<job>/<fire key>     persistent, the RunRecord JSON of one claimed fire (its
                                  attempt and state live in the JSON)
    R/N/controls/<key>            persistent, one operator control (the key percent-encoded)
    R/N/members/<replica id>      ephemeral, one replica's presence (Member JSON)
    R/N/preflight-<hex>           ephemeral, the preflight's probe, deleted at once

A job name is percent-encoded into one node name (so ``/`` cannot nest); a fire key is
zero-padded to 15 digits, so that zkCli lists a job's fires in time order.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from scheduler.errors import ConfigError

#: Latch node names: "<guid>-latch-" followed by ZooKeeper's 10-digit sequence number.
LATCH_MARK = "-latch-"
#: The election's directories, and how many levels below each the preflight's ACL check
#: descends: runs/<job>/<fire key>, latch/<node>, controls/<key>, members/<replica>.
TREE = {"latch": 1, "runs": 2, "controls": 1, "members": 1}


def check_segment(segment: str, key: str, what: str) -> None:
    """Refuse a path segment ZooKeeper would reject or read as another path.

    Raises:
        ConfigError: under config key ``key``, naming ``what``.
    """
    if not segment or segment in (".", "..") or "/" in segment:
        raise ConfigError(key, f"{what}: {segment!r} is not a valid ZooKeeper node name")
    if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in segment):
        raise ConfigError(key, f"{what}: {segment!r} contains a control character")


def job_segment(job: str) -> str:
    """A job name as one node name: percent-encoded, so ``/`` cannot nest and ``.`` is safe."""
    encoded = quote(job, safe="")
    return encoded.replace(".", "%2E") if encoded in (".", "..") else encoded


def key_name(key: int) -> str:
    """A fire key as a node name: zero-padded so that zkCli lists fires in order (parsed
    back with ``int()``)."""
    return f"{key:015d}"


def sequence(name: str) -> int:
    """The sequence number ZooKeeper appended to a latch node name."""
    try:
        return int(name.rsplit(LATCH_MARK, 1)[1])
    except (IndexError, ValueError):
        return -1  # not a latch node: sorts first, and is never mistaken for ours


def guid_of(name: str) -> str:
    """The GUID a latch node name begins with (Curator's "protected" mode)."""
    return name.split(LATCH_MARK, 1)[0]


@dataclass(frozen=True, slots=True)
class Layout:
    """The paths of one chroot's nodes (see the module docstring).

    Attributes:
        root: the absolute chroot path.
    """

    root: str

    def election(self, name: str) -> str:
        """The directory of election ``name``.

        Raises:
            ConfigError: ``name`` is not a valid node name (key ``cluster``).
        """
        check_segment(name, "cluster", "election name")
        return f"{self.root}/{name}"

    def latch(self, name: str) -> str:
        return f"{self.election(name)}/latch"

    def leader_note(self, name: str) -> str:
        return f"{self.election(name)}/leader"

    def runs(self, name: str, job: str) -> str:
        """The directory of ``job``'s run nodes."""
        return f"{self.election(name)}/runs/{job_segment(job)}"

    def run(self, name: str, job: str, key: int) -> str:
        """The run node of ``job``'s fire ``key``."""
        return f"{self.runs(name, job)}/{key_name(key)}"

    def members(self, name: str) -> str:
        return f"{self.election(name)}/members"

    def controls(self, name: str) -> str:
        return f"{self.election(name)}/controls"

    def control(self, name: str, key: str) -> str:
        return f"{self.controls(name)}/{quote(key, safe='')}"


__all__ = [
    "LATCH_MARK",
    "TREE",
    "Layout",
    "check_segment",
    "guid_of",
    "job_segment",
    "key_name",
    "sequence",
]
