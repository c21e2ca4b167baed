"""Site statistics' pure parts: uptime from connectivity changes, windowed counters."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.stats import LONGEST_WINDOW_S, CounterHistory, online_fraction


@pytest.mark.parametrize(
    ("changes", "online_at_start", "expected"),
    [
        ([], False, 0.0),
        ([], True, 1.0),
        # Online for the second half.
        ([(50.0, True)], False, 0.5),
        # Online at the start, gone at 25, back at 75.
        ([(25.0, False), (75.0, True)], True, 0.5),
        # Repeated connections while online count once; a disconnect while offline changes nothing.
        ([(10.0, True), (20.0, True), (30.0, False), (40.0, False)], False, 0.2),
        # Changes outside the window are clipped to it.
        ([(-50.0, True), (150.0, False)], False, 1.0),
        ([(90.0, True), (200.0, False)], False, 0.1),
    ],
)
def test_online_fraction(changes: list[tuple[float, bool]], online_at_start: bool, expected: float) -> None:
    assert online_fraction(changes, online_at_start=online_at_start, start=0.0, end=100.0) == pytest.approx(
        expected
    )


def test_an_empty_window_has_no_uptime() -> None:
    assert online_fraction([(5.0, True)], online_at_start=True, start=10.0, end=10.0) == 0.0


@given(
    st.lists(st.tuples(st.floats(-1e3, 1e3), st.booleans())).map(sorted),
    st.booleans(),
)
def test_online_fraction_is_a_fraction(changes: list[tuple[float, bool]], online_at_start: bool) -> None:
    fraction = online_fraction(changes, online_at_start=online_at_start, start=0.0, end=500.0)
    assert 0.0 <= fraction <= 1.0


def test_counter_growth_since_a_sample() -> None:
    history = CounterHistory(started=1000.0)
    history.record(1000.0, {})
    history.record(1060.0, {"queue_full": 5})
    history.record(1120.0, {"queue_full": 9, "rate_limited": 2})
    grown = history.since(1070.0, {"queue_full": 12, "rate_limited": 2, "bad_payload": 1})
    # The baseline is the newest sample at or before the start: the one at 1060.
    assert grown.counts == {"queue_full": 7, "rate_limited": 2, "bad_payload": 1}
    assert grown.counted_since == 1060.0


def test_a_window_older_than_the_history_counts_from_its_start() -> None:
    history = CounterHistory(started=5000.0)
    history.record(5000.0, {})
    grown = history.since(1000.0, {"queue_full": 3})
    assert grown.counts == {"queue_full": 3}
    assert grown.counted_since == 5000.0


def test_samples_thin_with_age_and_stay_bounded() -> None:
    history = CounterHistory(started=0.0)
    # Two months of samples every ten seconds, one drop a sample.
    step = 10.0
    total = 0
    now = 0.0
    while now < 2 * LONGEST_WINDOW_S:
        history.record(now, {"queue_full": total})
        total += 1
        now += step
    last = now - step
    assert len(history) <= 1440 + 720 + 4
    # A day ago: matched to within a minute.
    day = history.since(last - 86400.0, {"queue_full": total})
    assert 86400.0 - 60.0 <= last - day.counted_since <= 86400.0 + 60.0
    assert day.counts["queue_full"] == pytest.approx(86400.0 / step, abs=60.0 / step + 1)
    # Thirty days ago: to within an hour.
    month = history.since(last - LONGEST_WINDOW_S, {"queue_full": total})
    assert LONGEST_WINDOW_S <= last - month.counted_since <= LONGEST_WINDOW_S + 3600.0
