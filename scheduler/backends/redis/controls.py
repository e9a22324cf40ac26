"""Operator controls on Redis: one hash per election, a field per control."""

from __future__ import annotations

from typing import cast

import redis as redis_lib

from scheduler.backends.redis.errors import translate_errors
from scheduler.backends.redis.keys import controls_key


class RedisControls:
    """The :class:`~scheduler.backends.base.Controls` role on one client."""

    def __init__(self, client: redis_lib.Redis, url: str) -> None:
        self._client = client
        self._url = url

    def set_control(self, name: str, key: str, value: str | None) -> None:
        """Set or delete the control ``key`` (a field of the cluster's controls hash)."""
        controls = controls_key(name)
        with translate_errors(self._url):
            if value is None:
                self._client.hdel(controls, key)
            else:
                self._client.hset(controls, key, value)

    def controls(self, name: str) -> dict[str, str]:
        """Every control of cluster ``name``."""
        controls = controls_key(name)
        with translate_errors(self._url):
            reply = self._client.hgetall(controls)
        return {str(k): str(v) for k, v in cast(dict[str, str], reply).items()}


__all__ = ["RedisControls"]
