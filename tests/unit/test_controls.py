"""Operator controls are parsed once, as untrusted input, into typed values."""

from __future__ import annotations

from scheduler.leadership.controls import (
    PAUSE_PREFIX,
    PAUSED_FIRES_PREFIX,
    RESIGN,
    OperatorControls,
)


def test_controls_parse_into_resign_token_pauses_and_pause_records() -> None:
    """Each key lands in its own typed field; unrelated keys are ignored."""
    controls = OperatorControls.parse(
        {
            RESIGN: "42",
            PAUSE_PREFIX + "a.b": '{"by": "op@h"}',
            PAUSE_PREFIX + "c": "anything",
            PAUSED_FIRES_PREFIX + "a.b": "[[1,2]]",
            "future-key": "x",
        }
    )
    assert controls.resign_token == 42
    assert controls.resign_requested(42) and not controls.resign_requested(43)
    assert controls.paused == frozenset({"a.b", "c"}) and controls.is_paused("c")
    assert not controls.is_paused("paused-fires:a.b")
    assert controls.skipped_fires("a.b") == "[[1,2]]" and controls.skipped_fires("c") is None
    assert controls.without_resign().resign_token is None
    assert controls.without_resign().paused == controls.paused


def test_a_resign_value_that_is_not_a_token_asks_nobody() -> None:
    """Only the canonical decimal form the CLI writes names a token (as the string
    comparison before it did): anything else asks no leader to step down."""
    for bad in ("", "07", "+7", " 7", "7 ", "7.0", "-7", "\u0667", "seven", "1" * 40):
        assert OperatorControls.parse({RESIGN: bad}).resign_token is None, bad
    assert OperatorControls.parse({RESIGN: "0"}).resign_token == 0
    assert OperatorControls.parse({}) == OperatorControls()
