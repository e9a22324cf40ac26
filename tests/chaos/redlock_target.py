"""The Redlock backend as the chaos suite drives it: three (or five) independent primaries.

The primaries persist with AOF and ``appendfsync always`` (the deployment the module
docstring of :mod:`scheduler.backends.redlock` asks for), and each replica reaches each
primary through a proxy of its own, its URL listing them all, so a partition cuts every
one of a replica's links. The faults of its own, besides the common ones:

* ``backend_restart``: kill -9 one primary (in turn) and restart it 0.5-3 s later with its
  AOF: a restarted server (another ``run_id``) that must not vote for a TTL;
* ``primary_stop``: SIGSTOP one primary for 1-5 s (a primary cut off from every replica);
* ``primary_wipe``: kill -9 one primary, delete its data, restart it empty a TTL plus
  0.5-2 s later (the delayed restart the docstring asks for without persistence): it must
  be re-seeded, and get a claim epoch, before it votes.

``foreign_delete`` deletes the lease key on every primary.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
from collections import Counter
from pathlib import Path
from typing import Any

from tests.chaos.proxy import Proxy, ProxyLoop
from tests.chaos.targets import SERVED_FAULTS, Holder, Target


class RedlockTarget(Target):
    """``primaries`` primaries with AOF (``appendfsync always``), a proxy per replica and
    primary."""

    kind = "redlock"
    faults = (
        "kill_leader",
        "pause_leader",
        "backend_restart",
        "primary_stop",
        "primary_wipe",
        *SERVED_FAULTS,
    )

    def __init__(self, workdir: Path, cluster: str, loop: ProxyLoop, primaries: int = 3) -> None:
        super().__init__(workdir, cluster)
        from tests.harness.redlock_group import RedlockGroup

        self.group = RedlockGroup(primaries, persistent=True)
        self._loop = loop
        self._links: dict[str, list[Proxy]] = {}
        self._clients: dict[int, Any] = {}
        self._next_kill = 0
        self._killed: Any = None

    def start(self) -> None:
        self.group.start()

    def url_for(self, replica: str) -> str:
        if replica not in self._links:
            self._links[replica] = [Proxy(self._loop, server.port) for server in self.group]
            self.proxies[replica] = self._links[replica][0]
        hosts = ",".join(f"127.0.0.1:{proxy.port}" for proxy in self._links[replica])
        return f"redlock://{hosts}/0"

    def links(self, replica: str) -> list[Proxy]:
        return self._links[replica]

    def _keys(self) -> tuple[str, str]:
        return f"baton:{{{self.cluster}}}:lease", f"baton:{{{self.cluster}}}:info"

    def _client(self, server: Any) -> Any:
        client = self._clients.get(server.port)
        if client is None:
            client = self._clients[server.port] = server.client(timeout=0.5)
        return client

    def holder(self) -> Holder | None:
        """The holder a majority of the primaries show (replica and token agree)."""
        lease, info = self._keys()
        seen: Counter[tuple[str, int]] = Counter()
        for server in self.group:
            if not server.running:
                continue
            try:
                pipe = self._client(server).pipeline(transaction=True)
                pipe.exists(lease)
                pipe.hmget(info, "replica", "token")
                exists, (replica, token) = pipe.execute()
            except Exception:
                continue
            if exists and replica is not None and token is not None:
                seen[(str(replica), int(token))] += 1
        for (replica, token), count in seen.most_common(1):
            if count >= len(self.group) // 2 + 1:
                return Holder(replica, token)
        return None

    def claim_epoch(self) -> str | None:
        """The claim epoch that ends last among the primaries ("low:high", server ms): a
        seal opens one on a primary that restarted (``SEAL_LUA``), which then refuses every
        fire up to its clock plus the claim allowance that has no record there."""
        key = f"baton:{{{self.cluster}}}:epoch"
        latest: tuple[int, str] | None = None
        for server in self.group:
            if not server.running:
                continue
            try:
                epoch = self._client(server).get(key)
                high = int(str(epoch).split(":")[1]) if epoch else None
            except Exception:
                continue
            if high is not None and (latest is None or high > latest[0]):
                latest = (high, str(epoch))
        return latest[1] if latest is not None else None

    def delete_lease(self) -> bool:
        deleted = False
        for server in self.group:
            with contextlib.suppress(Exception):
                deleted |= bool(self._client(server).delete(self._keys()[0]))
        return deleted

    @property
    def server_pid(self) -> int | None:
        server = self.group[self._next_kill % len(self.group)]
        return server.pid if server.running else None

    def _forget_client(self, server: Any) -> None:
        client = self._clients.pop(server.port, None)
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()

    def kill_server(self) -> None:
        """kill -9 the next primary in turn (its AOF stays)."""
        server = self.group[self._next_kill % len(self.group)]
        self._next_kill += 1
        self._forget_client(server)
        server.kill()
        self._killed = server

    def restart_server(self) -> None:
        if self._killed is not None:
            self._killed.start()
            self._killed = None

    def stop_primary(self, rng: random.Random) -> Any:
        """SIGSTOP a random primary; returns it (resume it with :meth:`resume_primary`)."""
        server = rng.choice([s for s in self.group if s.running])
        os.kill(server.pid, signal.SIGSTOP)
        return server

    @staticmethod
    def resume_primary(server: Any) -> None:
        if server.running:
            os.kill(server.pid, signal.SIGCONT)

    def wipe_primary(self, rng: random.Random) -> Any:
        """kill -9 a random primary and delete its AOF: restarted, it is empty."""
        server = rng.choice([s for s in self.group if s.running])
        self._forget_client(server)
        server.kill()
        shutil.rmtree(server.dir / "appendonlydir", ignore_errors=True)
        return server

    def heal_all(self) -> None:
        super().heal_all()
        for server in self.group:
            if server.running:
                self.resume_primary(server)
            else:
                server.start()
        self._killed = None

    def close(self) -> None:
        for links in self._links.values():
            for proxy in links:
                proxy.close()
        for port in list(self._clients):
            with contextlib.suppress(Exception):
                self._clients.pop(port).close()
        for server in self.group:
            self.resume_primary(server)
        self.group.cleanup()


__all__ = ["RedlockTarget"]
