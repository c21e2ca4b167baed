"""Connectivity from connection notices and message freshness."""

from __future__ import annotations

from gateway.model import Connectivity
from gateway.presence import Presence

WINDOW = 10.0


def test_never_seen_is_unknown() -> None:
    presence = Presence(WINDOW)
    assert presence.status("HW", 100.0, seen_before=False) is Connectivity.UNKNOWN
    assert presence.status(None, 100.0, seen_before=True) is Connectivity.UNKNOWN


def test_seen_before_in_the_store_but_silent_is_offline() -> None:
    assert Presence(WINDOW).status("HW", 100.0, seen_before=True) is Connectivity.OFFLINE


def test_online_while_any_of_several_connections_is_open() -> None:
    presence = Presence(WINDOW)
    presence.connected("auto-1", "HW")
    presence.connected("auto-2", "HW")
    presence.disconnected("auto-1")
    assert presence.open_connections("HW") == 1
    assert presence.status("HW", 1e9, seen_before=False) is Connectivity.ONLINE
    presence.disconnected("auto-2")
    assert presence.open_connections("HW") == 0
    assert presence.status("HW", 1e9, seen_before=False) is Connectivity.OFFLINE


def test_fresh_message_counts_as_online_until_the_window_passes() -> None:
    presence = Presence(WINDOW)
    presence.message("HW", 100.0)
    assert presence.status("HW", 100.0 + WINDOW, seen_before=False) is Connectivity.ONLINE
    assert presence.status("HW", 100.1 + WINDOW, seen_before=False) is Connectivity.OFFLINE


def test_client_id_takeover_does_not_leak_a_connection() -> None:
    presence = Presence(WINDOW)
    presence.connected("same-id", "HW")
    presence.connected("same-id", "HW")  # the broker closed the old session
    assert presence.open_connections("HW") == 1
    presence.disconnected("same-id")
    assert presence.open_connections("HW") == 0


def test_unknown_disconnects_and_anonymous_connects_are_ignored() -> None:
    presence = Presence(WINDOW)
    presence.disconnected("never-connected")
    presence.connected("auto-9", None)
    assert presence.online_count() == 0
    assert presence.connects == 0


def test_broker_restart_clears_connections_but_not_freshness() -> None:
    presence = Presence(WINDOW)
    presence.connected("auto-1", "HW")
    presence.message("HW", 50.0)
    presence.reset_connections()
    assert presence.online_count() == 0
    assert presence.status("HW", 55.0, seen_before=False) is Connectivity.ONLINE
    assert presence.status("HW", 70.0, seen_before=False) is Connectivity.OFFLINE
