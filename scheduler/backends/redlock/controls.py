"""Operator controls on a Redlock group: a last-writer-wins register per control.

Each control is stored on every primary as ``<version>|=<value>`` (set) or
``<version>|-`` (deleted: a tombstone, so that a deletion outvotes an older value on a
primary it reached), where the version is the writer's clock in µs, raised above every
version this process wrote before. A write needs a majority of primaries to answer; a read
takes, per control, the highest version among the answering primaries (a majority at
least), so a read sees every write a majority stored. Operator controls change rarely and
by hand, so ordering by the writers' clocks is enough; tombstones stay (a few bytes per
control ever set).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from scheduler.backends.redlock.primaries import OnPrimaries, Primary
from scheduler.backends.redlock.quorum import Fanout
from scheduler.clock import Clock

_DELETED = "-"


def _decode(raw: str) -> tuple[int, str | None]:
    """``(version, value or None when deleted)``; a value without a version is version 0."""
    version, sep, rest = raw.partition("|")
    if not sep or not version.isdigit() or not rest:
        return 0, raw
    return int(version), (None if rest == _DELETED else rest[1:])


class RedlockControls(OnPrimaries):
    """The :class:`~scheduler.backends.base.Controls` role on a Redlock group."""

    def __init__(
        self,
        primaries: Sequence[Primary],
        fanout: Fanout,
        url: str,
        op_timeout: float,
        clock: Clock,
    ) -> None:
        super().__init__(primaries, fanout, url, op_timeout)
        self._clock = clock
        self._last = 0
        self._lock = threading.Lock()

    def _version(self) -> int:
        now = int(self._clock.now().timestamp() * 1_000_000)
        with self._lock:
            self._last = max(now, self._last + 1)
            return self._last

    def set_control(self, name: str, key: str, value: str | None) -> None:
        """Write the control (or its tombstone) with a new version on every primary."""
        stored = f"{self._version()}|{_DELETED if value is None else '=' + value}"
        self._on_majority(lambda p: p.controls.set_control(name, key, stored), "setting a control")

    def controls(self, name: str) -> dict[str, str]:
        """Per control, the value of the highest version the answering primaries hold."""
        answered = self._on_majority(lambda p: p.controls.controls(name), "reading controls")
        newest: dict[str, tuple[int, str | None]] = {}
        for _, stored in answered:
            for key, raw in stored.items():
                version, value = _decode(raw)
                if key not in newest or version > newest[key][0]:
                    newest[key] = (version, value)
        return {key: value for key, (_, value) in newest.items() if value is not None}


__all__ = ["RedlockControls"]
