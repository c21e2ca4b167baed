"""The device list's search, filter and order parameters (`gateway.device_search`, `params.device_filter`)
and the presence sets the connectivity filter is decided with. Pure."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.api.errors import ApiError
from gateway.api.params import device_filter
from gateway.device_search import (
    DeviceFilter,
    DeviceOrder,
    SearchTextError,
    fts_query,
    search_terms,
    tag_name_problem,
)
from gateway.model import Connectivity, DeviceType
from gateway.presence import Presence


def test_search_words_are_split_deduplicated_and_quoted() -> None:
    assert search_terms("") == ()
    assert search_terms("  pump\tNorth  pump ") == ("pump", "North")
    assert fts_query(("pump", "North")) == '"pump" AND "North"'
    # FTS syntax is plain text: quotes are doubled, operators stay inside the quoted string.
    assert fts_query(('a"b*', "NOT", "x:(y)")) == '"a""b*" AND "NOT" AND "x:(y)"'


@pytest.mark.parametrize(
    "q",
    ["ab", "pump ab", "abc\x00", "\x7fxyz", "ab\ud800c", "x" * 201, " ".join(f"w{i:02d}" for i in range(11))],
)
def test_unsearchable_text_is_refused(q: str) -> None:
    with pytest.raises(SearchTextError):
        search_terms(q)


@given(st.text(max_size=60))
def test_any_text_gives_terms_or_the_declared_error(q: str) -> None:
    try:
        terms = search_terms(q)
    except SearchTextError:
        return
    assert all(len(term) >= 3 and not any(c.isspace() for c in term) for term in terms)
    expression = fts_query(terms)
    # Every term is exactly one quoted FTS string.
    assert expression.count('"') == sum(2 + 2 * term.count('"') for term in terms)


def test_tag_names() -> None:
    assert tag_name_problem("Roof 2") is None
    assert tag_name_problem("Ünïcode ✓") is None
    for bad in ("", "  ", " x", "x ", "a,b", "a/b", "{x}", "x" * 65, "a\nb"):
        assert tag_name_problem(bad) is not None, bad


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({}, DeviceFilter()),
        # What Enapter's clients send never filters.
        ({"expand": "", "limit": "50", "offset": "0"}, DeviceFilter()),
        ({"q": "", "type.in": "", "order": ""}, DeviceFilter()),
        ({"q": "pump"}, DeviceFilter(terms=("pump",))),
        (
            {"type.in": "standalone,LUA"},
            DeviceFilter(types=frozenset({DeviceType.STANDALONE, DeviceType.LUA})),
        ),
        ({"connectivity.in": "online"}, DeviceFilter(connectivity=frozenset({Connectivity.ONLINE}))),
        ({"tag.in": "roof, Cellar"}, DeviceFilter(tags=frozenset({"roof", "Cellar"}))),
        ({"blueprint_id.in": "b1"}, DeviceFilter(blueprint_ids=frozenset({"b1"}))),
        (
            {"created_at.gte": "1970-01-01T00:01:40Z", "created_at.lt": "200"},
            DeviceFilter(created_from=100.0, created_before=200.0),
        ),
        ({"raised_alert_names.in": "overheat"}, DeviceFilter(raised_alert_names=frozenset({"overheat"}))),
        ({"order": "name_desc"}, DeviceFilter(order=DeviceOrder.NAME_DESC)),
        ({"order": "LAST_SEEN_AT_ASC"}, DeviceFilter(order=DeviceOrder.LAST_SEEN_AT_ASC)),
    ],
)
def test_device_filters_parse(query: dict[str, str], expected: DeviceFilter) -> None:
    assert device_filter(query) == expected


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ({"foo.in": "x"}, "foo.in"),
        ({"name.gte": "a"}, "name.gte"),
        ({"type.in": "STANDALONE,TOASTER"}, "type.in"),
        ({"connectivity.in": "MAYBE"}, "connectivity.in"),
        ({"created_at.gte": "yesterday"}, "created_at.gte"),
        ({"created_at.lt": "2025-01-01T00:00:00"}, "created_at.lt"),
        ({"order": "colour"}, "order"),
        ({"q": "ab"}, "q"),
    ],
)
def test_bad_device_filters_name_the_parameter(query: dict[str, str], parameter: str) -> None:
    with pytest.raises(ApiError) as raised:
        device_filter(query)
    assert raised.value.status == 400
    assert raised.value.details == {"parameter": parameter}


@given(
    events=st.lists(
        st.tuples(
            st.sampled_from(["connect", "disconnect", "message"]),
            st.sampled_from(["c1", "c2", "c3"]),
            st.sampled_from(["HW1", "HW2"]),
            st.floats(0, 100),
        ),
        max_size=12,
    ),
    now=st.floats(0, 120),
    seen_before=st.booleans(),
)
def test_presence_sets_decide_connectivity_like_status(
    events: list[tuple[str, str, str, float]], now: float, seen_before: bool
) -> None:
    presence = Presence(10.0)
    for kind, client, identity, at in events:
        if kind == "connect":
            presence.connected(client, identity)
        elif kind == "disconnect":
            presence.disconnected(client)
        else:
            presence.message(identity, at)
    online, seen = presence.online_identities(now), presence.seen_identities()
    for identity in ("HW1", "HW2", "HW3"):
        # The store's SQL: ONLINE if in `online`, else OFFLINE if seen (store or presence), else UNKNOWN.
        if identity in online:
            expected = Connectivity.ONLINE
        elif seen_before or identity in seen:
            expected = Connectivity.OFFLINE
        else:
            expected = Connectivity.UNKNOWN
        assert presence.status(identity, now, seen_before=seen_before) is expected
