"""A jobs module that takes ``BATON_TEST_IMPORT_PAUSE`` seconds to import (none when unset):
for a child aborted while it still imports its job."""

from __future__ import annotations

import os
import time

from scheduler.jobs.context import JobContext

time.sleep(float(os.environ.get("BATON_TEST_IMPORT_PAUSE", "0")))


def quick_job(ctx: JobContext) -> None:
    """Returns at once (once imported)."""
