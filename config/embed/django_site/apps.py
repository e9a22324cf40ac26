"""Recipe: Baton inside a Django project, started by an AppConfig in every worker.

    BATON_EMBED=1 BATON_CONFIG=baton.yaml gunicorn django_site.wsgi --workers 4

``ready()`` runs once per process when Django loads; under gunicorn (without
``--preload``) that is in each worker, after the fork, so each worker is one replica and
they elect one leader: each tick fires once. ``ready()`` also runs for ``manage.py migrate``,
``shell`` and the test runner, which must not join the election: the replica starts only
where ``BATON_EMBED=1`` is set (the web servers' environment). The replica stops (a graceful
handover) when the worker process exits (``atexit``: gunicorn's SIGTERM, a reload); give
gunicorn a ``--graceful-timeout`` above ``shutdown_grace``.
"""

from __future__ import annotations

import os

from django.apps import AppConfig


class BatonAppConfig(AppConfig):
    name = "django_site"
    label = "baton_recipe"

    def ready(self) -> None:
        if os.environ.get("BATON_EMBED") != "1":
            return
        from scheduler import BatonReplica

        BatonReplica().start()  # stops itself at process exit (stop_at_exit=True)
