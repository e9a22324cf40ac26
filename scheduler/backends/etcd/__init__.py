"""The etcd backend (``etcd://``, ``etcds://``): where Kubernetes keeps its state, with an
etcd lease for liveness and the leader key's create revision as the fencing token.

One role a module, behind the façade :class:`EtcdBackend` (:mod:`.backend`):

* :mod:`.url`: the URL and its options; :mod:`.keys`: the key layout under the prefix;
* :mod:`.gateway`: a thin bounded client of etcd's v3 HTTP/JSON gateway (and why not
  ``etcd3gw``), its errors as Baton's;
* :mod:`.lease`: the election (lease, guarded create, watch for handover, the token);
  :mod:`.ledger`: run records in fenced transactions; :mod:`.presence`: presence and
  controls.

Needs the optional dependency ``httpx`` (``pip install 'baton[etcd]'``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from scheduler.backends.etcd.url import DEFAULT_PORT, DEFAULT_PREFIX, EtcdTarget, parse_url

if TYPE_CHECKING:
    from scheduler.backends.etcd.backend import EtcdBackend


def __getattr__(name: str) -> Any:
    # The URL needs no driver; the backend imports httpx, an optional extra.
    if name == "EtcdBackend":
        from scheduler.backends.etcd.backend import EtcdBackend

        return EtcdBackend
    raise AttributeError(name)


__all__ = ["DEFAULT_PORT", "DEFAULT_PREFIX", "EtcdBackend", "EtcdTarget", "parse_url"]
