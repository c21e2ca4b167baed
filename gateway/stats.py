"""Site statistics over a window: the windows, uptime from a connectivity timeline, and windowed
views of counters that only ever grow (`GET /api/v3/site/stats`).

Pure: times are passed in.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

WINDOWS: Final[Mapping[str, float]] = {"1h": 3600.0, "24h": 86400.0, "7d": 7 * 86400.0, "30d": 30 * 86400.0}
"""The windows `?window=` accepts, in seconds."""

LONGEST_WINDOW_S: Final = max(WINDOWS.values())

# CounterHistory keeps a sample a minute for a day, then one an hour up to the longest window: at
# most 1,440 + 720 samples, and a window's start is matched to within a minute (an hour past a day).
_FINE_STEP_S: Final = 60.0
_FINE_SPAN_S: Final = 86400.0
_COARSE_STEP_S: Final = 3600.0


def online_fraction(
    changes: Iterable[tuple[float, bool]], *, online_at_start: bool, start: float, end: float
) -> float:
    """The part of [start, end] during which a device was online, between 0 and 1.

    `changes` are (time, online) in time order: a connection (True) or a disconnection (False).
    Changes before `start` are ignored (the caller gives the state at `start`), as are changes
    after `end`; repeated changes to the same state change nothing.
    """
    if end <= start:
        return 0.0
    online_s = 0.0
    online_since = start if online_at_start else None
    for at, online in changes:
        at = min(max(at, start), end)
        if online and online_since is None:
            online_since = at
        elif not online and online_since is not None:
            online_s += at - online_since
            online_since = None
    if online_since is not None:
        online_s += end - online_since
    return min(online_s / (end - start), 1.0)


@dataclass(frozen=True, slots=True)
class Windowed:
    """How much each counter grew since a time, and since when it was really counted (later than
    asked when the counting started later, e.g. the daemon started within the window)."""

    counts: dict[str, int]
    counted_since: float


class CounterHistory:
    """Samples of cumulative counters, thinned with age, to tell how much they grew in a window.

    The counters start at zero when the history starts (a daemon's in-memory counters).
    """

    def __init__(self, started: float) -> None:
        self._started = started
        self._fine: collections.deque[tuple[float, dict[str, int]]] = collections.deque()
        self._coarse: collections.deque[tuple[float, dict[str, int]]] = collections.deque()

    def __len__(self) -> int:
        """Samples kept."""
        return len(self._fine) + len(self._coarse)

    def record(self, now: float, counts: Mapping[str, int]) -> None:
        """Keep a sample of `counts` at `now` if the last one is old enough; forget what no window
        reaches any more."""
        sample = (now, dict(counts))
        if not self._fine or now - self._fine[-1][0] >= _FINE_STEP_S:
            self._fine.append(sample)
        if not self._coarse or now - self._coarse[-1][0] >= _COARSE_STEP_S:
            self._coarse.append(sample)
        while self._fine and self._fine[0][0] < now - _FINE_SPAN_S - _FINE_STEP_S:
            self._fine.popleft()
        while self._coarse and self._coarse[0][0] < now - LONGEST_WINDOW_S - _COARSE_STEP_S:
            self._coarse.popleft()

    def since(self, start: float, current: Mapping[str, int]) -> Windowed:
        """How much each counter in `current` grew from `start` until now.

        The baseline is the newest sample at or before `start`; where there is none, the counting
        started within the window: from zero at the history's start.
        """
        baseline: tuple[float, Mapping[str, int]] = (self._started, {})
        for samples in (self._fine, self._coarse):
            if samples and samples[0][0] <= start:
                baseline = max(
                    (sample for sample in samples if sample[0] <= start), key=lambda sample: sample[0]
                )
                break
        at, before = baseline
        counts = {key: value - before.get(key, 0) for key, value in current.items()}
        return Windowed(counts={key: value for key, value in counts.items() if value > 0}, counted_since=at)
