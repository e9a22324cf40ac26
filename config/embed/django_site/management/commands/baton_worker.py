"""Recipe: Baton as a Django management command, for a worker deployment of the project.

    BATON_CONFIG=baton.yaml python -m django baton_worker --settings django_site.settings

The jobs import the project's models and settings as any Django code does. The command
blocks until SIGTERM or SIGINT, then hands over (no new fire, running jobs get
``shutdown_grace``, the lease is released) and exits 0. If the AppConfig already started a
replica in this process (``BATON_EMBED=1``), the command runs that one: one per process.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from scheduler import BatonReplica
from scheduler.ops.embed import current


class Command(BaseCommand):
    help = "Run a Baton replica: join the election, fire the jobs it wins, hand over on SIGTERM."

    def handle(self, *args: Any, **options: Any) -> None:
        (current() or BatonReplica()).run_until_signal()
