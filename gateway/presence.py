"""Device connectivity: open broker connections per identity, combined with message freshness.

Pure: the caller passes the time. The Enapter SDK opens two or three connections per device with the
same credentials and empty client ids, so presence is keyed on the authenticated identity (the
username, which is the hardware id) and counts concurrent connections (DESIGN.md, Connectivity).

A device is ONLINE while it has an open connection, or while its last message is younger than the
window (covering notices the daemon missed, e.g. while it reconnected to the broker); OFFLINE once
seen; UNKNOWN if never seen.
"""

from __future__ import annotations

from gateway.model import Connectivity


class Presence:
    """Tracks which broker clients belong to which identity and when each identity last spoke."""

    def __init__(self, window_s: float) -> None:
        self._window_s = window_s
        self._identity_of: dict[str, str] = {}  # broker client id -> username
        self._open: dict[str, int] = {}  # username -> open connections
        self._last_message: dict[str, float] = {}
        self._seen: set[str] = set()
        self.connects = 0

    def connected(self, client_id: str, username: str | None) -> tuple[str | None, bool]:
        """A client authenticated; `username` None (no credentials) is not a device.

        Returns (an identity this left with no connection, whether `username` came online): a
        device is connected from its first open connection to the end of its last one, however
        many it holds in between (the SDK opens two or three).
        """
        if username is None:
            return None, False
        came_online = self._open.get(username, 0) == 0
        # A client id reused while its old session lives replaces that session (takeover).
        gone = self.disconnected(client_id)
        self._identity_of[client_id] = username
        self._open[username] = self._open.get(username, 0) + 1
        self._seen.add(username)
        self.connects += 1
        return (None if gone == username else gone), came_online

    def disconnected(self, client_id: str) -> str | None:
        """A client's connection ended, for whatever reason; returns its identity if that has no
        open connection left (the device went offline), else None."""
        username = self._identity_of.pop(client_id, None)
        if username is None:
            return None
        remaining = self._open.get(username, 0) - 1
        if remaining > 0:
            self._open[username] = remaining
            return None
        self._open.pop(username, None)
        return username

    def message(self, identity: str, now: float) -> None:
        """A message arrived from `identity` at `now`."""
        self._last_message[identity] = now

    def reset_connections(self) -> list[str]:
        """The broker restarted: every connection is gone, whatever notices were missed. Returns
        the identities that had open connections (sorted)."""
        online = sorted(self._open)
        self._identity_of.clear()
        self._open.clear()
        return online

    def open_connections(self, identity: str) -> int:
        """How many broker connections `identity` holds now."""
        return self._open.get(identity, 0)

    def status(self, identity: str | None, now: float, *, seen_before: bool) -> Connectivity:
        """ONLINE, OFFLINE or UNKNOWN for `identity`; `seen_before` = the store knows a message from it."""
        if identity is None:
            return Connectivity.UNKNOWN
        if self._open.get(identity, 0) > 0:
            return Connectivity.ONLINE
        last = self._last_message.get(identity)
        if last is not None and now - last <= self._window_s:
            return Connectivity.ONLINE
        if seen_before or identity in self._seen or last is not None:
            return Connectivity.OFFLINE
        return Connectivity.UNKNOWN

    def online_count(self) -> int:
        """Identities with at least one open connection."""
        return len(self._open)

    def online_identities(self, now: float) -> frozenset[str]:
        """The identities `status` calls ONLINE at `now` (for filtering device lists in SQL)."""
        fresh = {identity for identity, last in self._last_message.items() if now - last <= self._window_s}
        return frozenset(self._open) | fresh

    def seen_identities(self) -> frozenset[str]:
        """The identities `status` calls at least OFFLINE whatever the store knows."""
        return frozenset(self._seen) | frozenset(self._last_message)
