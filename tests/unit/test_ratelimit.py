"""Tests for `gateway.api.ratelimit`: fixed windows per key, bounded memory, the header values."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.api.ratelimit import Decision, WindowLimiter

# --- One key -------------------------------------------------------------------------------------


def test_a_burst_of_limit_is_allowed_then_denied() -> None:
    limiter = WindowLimiter(limit=3, window=60.0)
    decisions = [limiter.hit("token", 100.0) for _ in range(5)]
    assert [d.allowed for d in decisions] == [True, True, True, False, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0, 0]
    assert all(d.limit == 3 for d in decisions)


def test_reset_after_counts_down_from_the_first_hit() -> None:
    limiter = WindowLimiter(limit=10, window=60.0)
    assert limiter.hit("k", 100.0).reset_after == 60.0
    assert limiter.hit("k", 115.0).reset_after == 45.0
    assert limiter.hit("k", 159.5).reset_after == 0.5


def test_denied_hits_do_not_extend_the_window() -> None:
    limiter = WindowLimiter(limit=1, window=10.0)
    assert limiter.hit("k", 0.0).allowed
    assert not limiter.hit("k", 4.0).allowed
    denied = limiter.hit("k", 9.0)
    assert not denied.allowed
    assert denied.reset_after == 1.0
    assert limiter.hit("k", 10.0).allowed  # the window opened at 0 ends at 10, not 19


def test_a_new_window_after_the_end_allows_again() -> None:
    limiter = WindowLimiter(limit=2, window=10.0)
    limiter.hit("k", 0.0)
    limiter.hit("k", 1.0)
    assert not limiter.hit("k", 9.999).allowed
    fresh = limiter.hit("k", 10.0)
    assert fresh == Decision(allowed=True, limit=2, remaining=1, reset_after=10.0)
    assert limiter.hit("k", 19.0).allowed
    assert not limiter.hit("k", 19.5).allowed


def test_keys_are_independent() -> None:
    limiter = WindowLimiter(limit=1, window=10.0)
    assert limiter.hit("a", 0.0).allowed
    assert not limiter.hit("a", 1.0).allowed
    assert limiter.hit("b", 1.0).allowed
    assert limiter.hit("b", 2.0).reset_after == 9.0
    assert limiter.exhausted("a", 2.0)
    assert limiter.exhausted("b", 2.0)
    assert not limiter.exhausted("c", 2.0)


def test_unlimited_always_allows_and_keeps_no_state() -> None:
    limiter = WindowLimiter(limit=0, window=10.0, max_keys=1)
    unlimited = Decision(allowed=True, limit=0, remaining=0, reset_after=0.0)
    for i in range(50):
        assert limiter.hit(f"k{i % 3}", float(i)) == unlimited
    assert limiter.peek("k0", 50.0) == unlimited
    assert not limiter.exhausted("k0", 50.0)
    assert len(limiter) == 0


# --- peek and exhausted --------------------------------------------------------------------------


def test_peek_does_not_count() -> None:
    limiter = WindowLimiter(limit=2, window=10.0)
    assert limiter.peek("k", 0.0) == Decision(allowed=True, limit=2, remaining=2, reset_after=10.0)
    for _ in range(5):
        limiter.peek("k", 0.0)
    assert len(limiter) == 0
    assert limiter.hit("k", 1.0).remaining == 1
    assert limiter.peek("k", 3.0) == Decision(allowed=True, limit=2, remaining=1, reset_after=8.0)
    assert limiter.hit("k", 4.0).allowed  # the peeks above used none of the limit
    assert limiter.peek("k", 5.0) == Decision(allowed=False, limit=2, remaining=0, reset_after=6.0)
    assert not limiter.hit("k", 5.0).allowed


def test_peek_after_the_window_ended_shows_a_full_limit() -> None:
    limiter = WindowLimiter(limit=1, window=10.0)
    limiter.hit("k", 0.0)
    assert not limiter.peek("k", 9.0).allowed
    assert limiter.peek("k", 10.0) == Decision(allowed=True, limit=1, remaining=1, reset_after=10.0)


def test_exhausted_is_true_from_the_limit_until_the_window_ends() -> None:
    limiter = WindowLimiter(limit=2, window=10.0)
    limiter.hit("k", 0.0)
    assert not limiter.exhausted("k", 1.0)
    limiter.hit("k", 1.0)
    assert limiter.exhausted("k", 1.0)
    assert limiter.exhausted("k", 9.9)
    assert not limiter.exhausted("k", 10.0)


# --- Retry-After ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reset_after", "retry_after"),
    [(0.0, 1), (0.2, 1), (1.0, 1), (1.0001, 2), (2.5, 3), (60.0, 60)],
)
def test_retry_after_rounds_up_to_at_least_one(reset_after: float, retry_after: int) -> None:
    decision = Decision(allowed=False, limit=1, remaining=0, reset_after=reset_after)
    assert decision.retry_after == retry_after


def test_retry_after_of_a_denied_hit() -> None:
    limiter = WindowLimiter(limit=1, window=60.0)
    limiter.hit("k", 0.0)
    assert limiter.hit("k", 57.5).retry_after == 3


# --- Bounded memory ------------------------------------------------------------------------------


def test_ended_windows_are_dropped_before_live_ones() -> None:
    limiter = WindowLimiter(limit=1, window=10.0, max_keys=3)
    limiter.hit("old", 0.0)
    limiter.hit("live-1", 5.0)
    limiter.hit("live-2", 6.0)
    assert len(limiter) == 3
    # At 10 "old" has ended: it is dropped, and the live windows are kept.
    assert limiter.hit("new", 10.0).allowed
    assert len(limiter) == 3
    assert limiter.exhausted("live-1", 10.0)
    assert limiter.exhausted("live-2", 10.0)
    assert limiter.exhausted("new", 10.0)


def test_when_full_of_live_windows_the_oldest_opened_is_dropped() -> None:
    limiter = WindowLimiter(limit=1, window=10.0, max_keys=2)
    limiter.hit("first", 0.0)
    limiter.hit("second", 1.0)
    limiter.hit("first", 2.0)  # a denied hit does not make "first" younger
    limiter.hit("third", 3.0)
    assert len(limiter) == 2
    assert not limiter.exhausted("first", 3.0)  # forgotten
    assert limiter.exhausted("second", 3.0)
    assert limiter.exhausted("third", 3.0)


def test_a_key_that_opens_a_new_window_becomes_the_youngest() -> None:
    limiter = WindowLimiter(limit=1, window=10.0, max_keys=2)
    limiter.hit("a", 0.0)
    limiter.hit("b", 5.0)
    limiter.hit("a", 12.0)  # a's window ended at 10; its new one opens at 12, after b's
    limiter.hit("c", 13.0)  # full of live windows: b (opened at 5) is the oldest
    assert limiter.exhausted("a", 13.0)
    assert not limiter.exhausted("b", 13.0)
    assert limiter.exhausted("c", 13.0)


def test_ended_windows_are_dropped_even_below_the_cap() -> None:
    limiter = WindowLimiter(limit=5, window=10.0)
    for i in range(100):
        limiter.hit(f"k{i}", 0.0)
    assert len(limiter) == 100
    limiter.hit("late", 10.0)
    assert len(limiter) == 1


@pytest.mark.parametrize(
    ("limit", "window", "max_keys"),
    [
        (-1, 1.0, 1),
        (True, 1.0, 1),
        (1, 0.0, 1),
        (1, -1.0, 1),
        (1, float("inf"), 1),
        (1, float("nan"), 1),
        (1, 1.0, 0),
    ],
)
def test_bad_arguments(limit: int, window: float, max_keys: int) -> None:
    with pytest.raises(ValueError, match="must be"):
        WindowLimiter(limit, window, max_keys)


# --- Any sequence of hits ------------------------------------------------------------------------

KEYS = "abcdef"
WINDOW = 10
# Whole seconds, so that now + reset_after is exact; 0 repeats the instant, >= WINDOW skips a window.
steps = st.lists(st.tuples(st.sampled_from(KEYS), st.sampled_from([0, 0, 1, 3, 9, 10, 11, 25])), max_size=80)


Seen = list[tuple[str, float, Decision]]


def _replay(limiter: WindowLimiter, max_keys: int, hits: list[tuple[str, int]]) -> Seen:
    """Hit `limiter` with `hits` (key, seconds since the previous hit), checking its size each time."""
    now = 0.0
    seen = []
    for key, step in hits:
        now += step
        seen.append((key, now, limiter.hit(key, now)))
        assert len(limiter) <= max_keys
    return seen


def _windows_of(seen: Seen, limit: int) -> dict[str, list[list[tuple[float, bool]]]]:
    """Split each key's hits into windows: a hit that opens one is the only one left limit - 1."""
    windows: dict[str, list[list[tuple[float, bool]]]] = {}
    for key, now, decision in seen:
        opened = decision.allowed and decision.remaining == limit - 1 and decision.reset_after == WINDOW
        if opened or key not in windows:
            assert opened, f"{key}'s first hit at {now} did not open a window"
            windows.setdefault(key, []).append([])
        windows[key][-1].append((now, decision.allowed))
    return windows


@given(st.integers(1, 4), steps)
def test_no_window_allows_more_than_limit(limit: int, hits: list[tuple[str, int]]) -> None:
    limiter = WindowLimiter(limit, float(WINDOW), max_keys=len(KEYS))  # room for every key
    seen = _replay(limiter, len(KEYS), hits)
    for key, key_windows in _windows_of(seen, limit).items():
        for window in key_windows:
            verdicts = [allowed for _, allowed in window]
            # At most `limit` allowed: the first `limit` hits of a window, every later one denied.
            assert verdicts == [i < limit for i in range(len(window))], (key, window)
            start = window[0][0]
            assert all(now < start + WINDOW for now, _ in window), "a window outlived its length"
        # With room for every key, a window is replaced only once it has ended.
        starts = [window[0][0] for window in key_windows]
        assert all(later >= earlier + WINDOW for earlier, later in itertools.pairwise(starts))
    for key, now, decision in seen:
        assert decision.limit == limit
        assert decision.remaining >= 0
        assert 0 < decision.reset_after <= WINDOW, (key, now, decision)


class _Reference:
    """The rules written out the slow way: a full scan for ended windows, then drop the oldest."""

    def __init__(self, limit: int, max_keys: int) -> None:
        self.limit = limit
        self.max_keys = max_keys
        self.windows: dict[str, tuple[float, int]] = {}  # key -> (start, count), in opening order

    def hit(self, key: str, now: float) -> tuple[bool, int, float]:
        start, count = self.windows.get(key, (now, 0))
        if now - start >= WINDOW:
            del self.windows[key]
            start, count = now, 0
        if key not in self.windows:
            for other in [k for k, (s, _) in self.windows.items() if now - s >= WINDOW]:
                del self.windows[other]
            if len(self.windows) >= self.max_keys:
                del self.windows[min(self.windows, key=lambda k: self.windows[k][0])]
        self.windows[key] = (start, count + 1)
        return count + 1 <= self.limit, max(0, self.limit - count - 1), start + WINDOW - now


@given(st.integers(1, 4), st.integers(1, 4), steps)
def test_memory_stays_bounded_and_matches_the_reference(
    limit: int, max_keys: int, hits: list[tuple[str, int]]
) -> None:
    limiter = WindowLimiter(limit, float(WINDOW), max_keys=max_keys)
    reference = _Reference(limit, max_keys)
    seen = _replay(limiter, max_keys, hits)
    for key, now, decision in seen:
        expected = reference.hit(key, now)
        assert (decision.allowed, decision.remaining, decision.reset_after) == expected, (key, now)
    # Even when live windows are dropped, no window lets more than `limit` requests through.
    for window in (w for ws in _windows_of(seen, limit).values() for w in ws):
        assert sum(allowed for _, allowed in window) <= limit
