"""Contract: operator controls (set_control, controls), on every backend kind."""

from __future__ import annotations

from collections.abc import Callable

from scheduler.backends import Backend


def test_controls_set_replace_delete(make_backend: Callable[..., Backend], election: str) -> None:
    """Controls are durable strings per cluster, readable by everyone, deletable."""
    writer, reader = make_backend(), make_backend()
    assert reader.controls(election) == {}
    writer.set_control(election, "resign", "42")
    writer.set_control(election, "pause:billing.reconcile", '{"by": "ops"}')
    writer.set_control(election, "resign", "43")
    assert reader.controls(election) == {"resign": "43", "pause:billing.reconcile": '{"by": "ops"}'}
    writer.set_control(election, "resign", None)
    writer.set_control(election, "resign", None)
    assert reader.controls(election) == {"pause:billing.reconcile": '{"by": "ops"}'}
    assert reader.controls(f"{election}-other") == {}
