"""What every reference contender process shares: its options, its event file, SIGTERM.

A reference process (``*_ref.py``) is started by the benchmark with its own options plus
``--events FILE``, writes JSON lines ``{"event": ..., "t": unix seconds, ...}`` there
(``started``, ``acquired``, ``released``), and leads until SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import time
from types import FrameType
from typing import Any


class Terminated(Exception):
    """SIGTERM arrived."""


def raise_terminated(signum: int, frame: FrameType | None) -> None:
    """A SIGTERM handler that raises :class:`Terminated` in the main thread."""
    raise Terminated


def parse_args(
    doc: str | None, argv: list[str] | None, options: list[tuple[str, dict[str, Any]]]
) -> argparse.Namespace:
    """Parse ``options`` (flag, ``add_argument`` keywords) followed by ``--events``."""
    parser = argparse.ArgumentParser(description=doc)
    for flag, kwargs in options:
        parser.add_argument(flag, **kwargs)
    parser.add_argument("--events", required=True, help="JSON-lines event file")
    return parser.parse_args(argv)


class EventLog:
    """The JSON-lines event file, kept open for the run; each line is flushed at once."""

    def __init__(self, path: str) -> None:
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - kept open for the run

    def emit(self, event: str, **fields: Any) -> None:
        self._file.write(json.dumps({"event": event, "t": time.time(), **fields}) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()
