"""Fixed-window rate limiting, keyed by a string (an API token's id, a client address).

Pure: no clock and no I/O; the caller passes ``now``, seconds from a monotonic clock. Each key's
window opens at the key's first counted request and lasts ``window`` seconds; the first request at or
after its end opens a new one. Within a window a key may make ``limit`` requests; further requests
are denied (and still counted) until the window ends. The window is fixed, not extended by denied
requests, so a client that keeps retrying is let in again when its window ends.

Memory is bounded by ``max_keys``. Windows are kept in the order they opened (an `OrderedDict`; a
key that opens a new window moves to the end), and all windows have the same length, so the windows
that have ended are always a prefix of that order: each `WindowLimiter.hit` drops that prefix, and
when a new key still finds the table full it drops the oldest-opened window. Every key is inserted
and dropped at most once per window, so `hit` is O(1) amortised and never scans the table. Dropping
a live window forgives that key (its next request opens a fresh window); that only happens when more
than ``max_keys`` keys are active in one window, and it is the price of a bounded table that an
attacker with many addresses cannot fill to lock everyone else out.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one request for one key, with what the rate-limit headers need.

    For an unlimited limiter (``limit`` 0) every decision is ``allowed`` with ``remaining`` 0 and
    ``reset_after`` 0.0: there is no window, so there is nothing to count down.
    """

    allowed: bool
    limit: int  # requests allowed per window; 0 = unlimited
    remaining: int  # requests left in the window after this one; never negative
    reset_after: float  # seconds until the current window ends; >= 0

    @property
    def retry_after(self) -> int:
        """Whole seconds for a ``Retry-After`` header: `reset_after` rounded up, at least 1.

        Rounded up so that a client that waits this long finds the window over; at least 1 because
        ``Retry-After: 0`` invites an immediate retry loop.
        """
        return max(1, math.ceil(self.reset_after))


_UNLIMITED = Decision(allowed=True, limit=0, remaining=0, reset_after=0.0)


@dataclass(slots=True)
class _Window:
    """One key's current window: when it opened and how many requests it has counted."""

    start: float
    count: int


class WindowLimiter:
    """Allows each key `limit` requests per fixed window of `window` seconds (`limit` 0 = unlimited)."""

    def __init__(self, limit: int, window: float, max_keys: int = 10_000) -> None:
        """Raise `ValueError` unless ``limit >= 0``, ``window`` is finite and > 0, ``max_keys >= 1``."""
        if isinstance(limit, bool) or limit < 0:
            raise ValueError(f"limit must be an integer >= 0, got {limit!r}")
        if not (math.isfinite(window) and window > 0):
            raise ValueError(f"window must be a number of seconds > 0, got {window!r}")
        if isinstance(max_keys, bool) or max_keys < 1:
            raise ValueError(f"max_keys must be an integer >= 1, got {max_keys!r}")
        self._limit = limit
        self._window = window
        self._max_keys = max_keys
        self._windows: OrderedDict[str, _Window] = OrderedDict()  # oldest-opened first

    @property
    def limit(self) -> int:
        """Requests allowed per key per window; 0 = unlimited."""
        return self._limit

    @property
    def window(self) -> float:
        """Length of a window, in seconds."""
        return self._window

    def __len__(self) -> int:
        """How many keys are tracked now (at most `max_keys`)."""
        return len(self._windows)

    def hit(self, key: str, now: float) -> Decision:
        """Count one request by `key` at `now`; allowed while the window's count is <= `limit`."""
        if self._limit == 0:
            return _UNLIMITED
        self._drop_ended(now)
        current = self._windows.get(key)
        if current is None or self._ended(current, now):
            if current is None:
                self._make_room()
            else:  # only reachable if `now` went backwards past an older window's end
                del self._windows[key]
            current = self._windows[key] = _Window(start=now, count=0)
        current.count += 1
        return self._decision(current, now, allowed=current.count <= self._limit)

    def peek(self, key: str, now: float) -> Decision:
        """The state of `key` at `now` without counting a request.

        `allowed` says whether a request now would be allowed. Without a current window the key has
        its whole `limit` left, and `reset_after` is `window`, the length of the window a request
        would open.
        """
        if self._limit == 0:
            return _UNLIMITED
        current = self._windows.get(key)
        if current is None or self._ended(current, now):
            return Decision(allowed=True, limit=self._limit, remaining=self._limit, reset_after=self._window)
        return self._decision(current, now, allowed=current.count < self._limit)

    def exhausted(self, key: str, now: float) -> bool:
        """Whether `key` has used its whole `limit` in its current window (never, when unlimited)."""
        if self._limit == 0:
            return False
        current = self._windows.get(key)
        return current is not None and not self._ended(current, now) and current.count >= self._limit

    def _ended(self, current: _Window, now: float) -> bool:
        return now - current.start >= self._window

    def _decision(self, current: _Window, now: float, *, allowed: bool) -> Decision:
        # Clamped so that a clock that stepped backwards cannot promise more than one window.
        reset_after = min(self._window, max(0.0, current.start + self._window - now))
        remaining = max(0, self._limit - current.count)
        return Decision(allowed=allowed, limit=self._limit, remaining=remaining, reset_after=reset_after)

    def _drop_ended(self, now: float) -> None:
        # Windows are in opening order and equally long, so the ended ones are a prefix.
        while self._windows:
            oldest = next(iter(self._windows.values()))
            if not self._ended(oldest, now):
                return
            self._windows.popitem(last=False)

    def _make_room(self) -> None:
        while len(self._windows) >= self._max_keys:
            self._windows.popitem(last=False)
