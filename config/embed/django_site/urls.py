"""URLs of the Django recipe."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.urls import path

from scheduler.ops.embed import current


def index(request: HttpRequest) -> HttpResponse:
    replica = current()
    return HttpResponse("leader" if replica is not None and replica.is_leader() else "follower")


urlpatterns = [path("", index)]
