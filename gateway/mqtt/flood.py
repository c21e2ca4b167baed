"""Per-device message budget: what keeps one flooding device from starving the others.

Pure: the caller passes the time. Each identity (a device's MQTT username, its hardware id) may
send `rate` messages per whole second of the clock; what it sends beyond that in the same second is
dropped. An identity is flooding when it is over its budget in `strikes` consecutive seconds, or
sends more than `burst_factor` times its budget within one second; the verdict says so once per
second, so that the caller can shut it out at the broker. Dropping in ingest alone does not help
the others: the broker forwards the flood over the one connection ingest shares with every device,
queues it there ahead of their messages, and drops for all devices alike once that queue is full
(perf-baselines.md §1). A flood from a fast sender fills that queue in about a second, so the
`burst_factor` rule has to catch it within its first milliseconds.

Memory is one small record per identity that ever sent, and ingest only asks for identities of
known devices, so it is bounded by the fleet.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass


class Verdict(enum.Enum):
    """What to do with one message."""

    ADMIT = "admit"
    DROP = "drop"  # over the budget of this second
    FLOODING = "flooding"  # over the budget, and for `strikes` seconds in a row: shut it out


@dataclass(slots=True)
class _Second:
    """One identity's current second: which one, how many messages so far, and how many
    consecutive seconds before it were over the budget."""

    second: int
    count: int
    strikes_before: int
    flagged: bool = False  # FLOODING was said in this second


class FloodGuard:
    """Counts messages per identity per second against `rate`."""

    def __init__(self, rate: int, strikes: int = 2, burst_factor: int = 10) -> None:
        if rate < 1 or strikes < 1 or burst_factor < 1:
            raise ValueError("rate, strikes and burst_factor must be positive")
        self._rate = rate
        self._strikes = strikes
        self._burst = rate * burst_factor
        self._seconds: dict[str, _Second] = {}

    @property
    def rate(self) -> int:
        """Messages per second each identity may send."""
        return self._rate

    def admit(self, identity: str, now: float) -> Verdict:
        """Count one message from `identity` at `now` (seconds) and judge it."""
        second = math.floor(now)
        current = self._seconds.get(identity)
        if current is None or current.second != second:
            strikes = 0
            if current is not None and current.second == second - 1 and current.count > self._rate:
                strikes = current.strikes_before + 1
            current = _Second(second=second, count=0, strikes_before=strikes)
            self._seconds[identity] = current
        current.count += 1
        if current.count <= self._rate:
            return Verdict.ADMIT
        if not current.flagged and (
            current.strikes_before + 1 >= self._strikes or current.count > self._burst
        ):
            current.flagged = True
            return Verdict.FLOODING
        return Verdict.DROP
