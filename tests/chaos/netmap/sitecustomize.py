"""A replica's own view of the network: loopback ports remapped to its own chaos proxies.

The chaos suite puts this directory on a replica's ``PYTHONPATH`` (Python imports
``sitecustomize`` at start-up) with ``BATON_CHAOS_NETMAP=port:proxy,port:proxy,...``. Every
``connect`` of the process to ``127.0.0.1:<port>`` then goes to ``127.0.0.1:<proxy>``
instead: that replica's own proxy in front of that server.

Why: with Sentinel or Redis Cluster the client does not keep to the address in its URL; it
is *told* where the servers are (by a Sentinel, by ``CLUSTER SLOTS``) and connects there.
A proxy in front of the URL's address alone would partition nothing. Remapping in the
process cuts (or slows) every link of that replica, to every Sentinel and every data
server wherever a failover moved the primary, and no other process's: the per-process
network a ``tc``/``iptables`` rule per replica would give, which this kernel lacks.
Nothing else is changed; without the variable this module does nothing.
"""

from __future__ import annotations

import os
import socket
from typing import Any

_SPEC = os.environ.get("BATON_CHAOS_NETMAP", "")
_LOOPBACK = ("127.0.0.1", "localhost")


def _parse(spec: str) -> dict[int, int]:
    ports: dict[int, int] = {}
    for pair in filter(None, spec.split(",")):
        port, proxy = pair.split(":")
        ports[int(port)] = int(proxy)
    return ports


def _install(ports: dict[int, int]) -> None:
    connect, connect_ex = socket.socket.connect, socket.socket.connect_ex

    def remap(address: Any) -> Any:
        if (
            isinstance(address, tuple)
            and len(address) >= 2
            and address[0] in _LOOPBACK
            and address[1] in ports
        ):
            return (address[0], ports[address[1]], *address[2:])
        return address

    def remapped_connect(self: socket.socket, address: Any) -> None:
        connect(self, remap(address))

    def remapped_connect_ex(self: socket.socket, address: Any) -> int:
        return connect_ex(self, remap(address))

    socket.socket.connect = remapped_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = remapped_connect_ex  # type: ignore[method-assign]


if _SPEC:
    _install(_parse(_SPEC))
