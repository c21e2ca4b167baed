"""The per-device message budget (gateway.mqtt.flood)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.mqtt.flood import FloodGuard, Verdict


def verdicts(guard: FloodGuard, identity: str, times: list[float]) -> list[Verdict]:
    return [guard.admit(identity, now) for now in times]


def test_messages_within_the_rate_are_admitted_and_the_rest_of_the_second_dropped() -> None:
    guard = FloodGuard(rate=3)
    assert verdicts(guard, "a", [10.0, 10.2, 10.5, 10.7, 10.99]) == [
        *[Verdict.ADMIT] * 3,
        Verdict.DROP,
        Verdict.DROP,
    ]
    # A new second, a new budget.
    assert guard.admit("a", 11.0) is Verdict.ADMIT


def test_devices_have_budgets_of_their_own() -> None:
    guard = FloodGuard(rate=2)
    assert verdicts(guard, "a", [5.0, 5.1, 5.2]) == [Verdict.ADMIT, Verdict.ADMIT, Verdict.DROP]
    assert verdicts(guard, "b", [5.3, 5.4]) == [Verdict.ADMIT, Verdict.ADMIT]


def test_a_device_over_its_rate_two_seconds_in_a_row_is_flooding_once() -> None:
    guard = FloodGuard(rate=2)
    first = verdicts(guard, "a", [1.0, 1.1, 1.2, 1.3])
    assert first == [Verdict.ADMIT, Verdict.ADMIT, Verdict.DROP, Verdict.DROP]
    second = verdicts(guard, "a", [2.0, 2.1, 2.2, 2.3, 2.4])
    assert second == [Verdict.ADMIT, Verdict.ADMIT, Verdict.FLOODING, Verdict.DROP, Verdict.DROP]
    # Still flooding in the next second: said again, once, so a lockout that failed is retried.
    assert verdicts(guard, "a", [3.0, 3.1, 3.2, 3.3]).count(Verdict.FLOODING) == 1


def test_a_burst_in_one_second_or_in_seconds_apart_is_not_flooding() -> None:
    guard = FloodGuard(rate=1)
    assert Verdict.FLOODING not in verdicts(guard, "a", [1.0, 1.5, 1.9])
    assert Verdict.FLOODING not in verdicts(guard, "a", [2.0])  # within the rate: the streak ends
    assert Verdict.FLOODING not in verdicts(guard, "a", [3.0, 3.5])
    assert Verdict.FLOODING not in verdicts(guard, "a", [5.0, 5.5])  # 4 was quiet: no streak


def test_more_strikes_need_more_seconds() -> None:
    guard = FloodGuard(rate=1, strikes=3)
    assert Verdict.FLOODING not in verdicts(guard, "a", [1.0, 1.1, 2.0, 2.1])
    assert verdicts(guard, "a", [3.0, 3.1]) == [Verdict.ADMIT, Verdict.FLOODING]


def test_far_over_the_rate_within_one_second_is_flooding_at_once() -> None:
    guard = FloodGuard(rate=2, burst_factor=3)
    seen = verdicts(guard, "a", [7.0 + i / 100 for i in range(10)])
    assert seen == [*[Verdict.ADMIT] * 2, *[Verdict.DROP] * 4, Verdict.FLOODING, *[Verdict.DROP] * 3]


@pytest.mark.parametrize(
    ("rate", "strikes", "burst_factor"), [(0, 2, 10), (-1, 2, 10), (5, 0, 10), (5, 2, 0)]
)
def test_the_parameters_must_be_positive(rate: int, strikes: int, burst_factor: int) -> None:
    with pytest.raises(ValueError, match="positive"):
        FloodGuard(rate=rate, strikes=strikes, burst_factor=burst_factor)


@given(
    rate=st.integers(1, 20),
    arrivals=st.lists(
        st.tuples(st.sampled_from(["a", "b", "c"]), st.floats(0, 30, allow_nan=False)), max_size=300
    ),
)
def test_no_device_gets_more_than_its_rate_in_any_second(
    rate: int, arrivals: list[tuple[str, float]]
) -> None:
    guard = FloodGuard(rate=rate)
    admitted: dict[tuple[str, int], int] = {}
    for identity, now in sorted(arrivals, key=lambda arrival: arrival[1]):
        if guard.admit(identity, now) is Verdict.ADMIT:
            key = (identity, int(now))
            admitted[key] = admitted.get(key, 0) + 1
    assert all(count <= rate for count in admitted.values())
    # Nobody else's messages are taken from a device's budget: each device alone gets min(sent, rate).
    sent: dict[tuple[str, int], int] = {}
    for identity, now in arrivals:
        sent[(identity, int(now))] = sent.get((identity, int(now)), 0) + 1
    assert admitted == {key: min(count, rate) for key, count in sent.items()}
