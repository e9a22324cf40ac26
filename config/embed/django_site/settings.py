"""Settings of the Django recipe: the smallest project that serves a page."""

from __future__ import annotations

import os

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "recipe-only-not-a-secret")
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "django_site.urls"
# The app whose ready() starts Baton in every worker process (apps.py).
INSTALLED_APPS = ["django_site.apps.BatonAppConfig"]
DATABASES: dict[str, object] = {}
USE_TZ = True
