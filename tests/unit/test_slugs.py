"""Tests for `gateway.slugs`: deriving slugs from names, and the rules every slug follows."""

from __future__ import annotations

import contextlib
import re
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.slugs import DEFAULT_SLUG, MAX_SLUG_LENGTH, slug_problem, slugify

SLUG = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("Meter", "meter"),
        ("Heat Pump #2", "heat-pump-2"),
        ("  --Electrolyser__EL 2.1--  ", "electrolyser-el-2-1"),
        ("already-a-slug", "already-a-slug"),
        ("Wärmepumpe Süd", "warmepumpe-sud"),
        ("Straße", "strasse"),
        ("İzmir", "izmir"),
        ("!!!", DEFAULT_SLUG),
        ("", DEFAULT_SLUG),
        ("日本", DEFAULT_SLUG),
    ],
)
def test_examples(name: str, slug: str) -> None:
    assert slugify(name) == slug


# Names of every length, with the pieces that matter: words, separators and device ids.
NAMES = st.text() | st.lists(
    st.sampled_from(["Heat", "pump", " ", "-", "#", "Ä", str(uuid.UUID(int=0)), "x" * 30])
    | st.text(max_size=4),
    max_size=8,
).map("".join)


@given(NAMES)
def test_any_name_gives_a_slug_the_api_would_accept(name: str) -> None:
    slug = slugify(name)
    assert SLUG.fullmatch(slug), slug
    assert slugify(slug) == slug
    # The store appends `-2`, `-3`, ... to a taken one; that must still be a valid slug.
    for taken in (slug, f"{slug}-2", f"{slug}-9999999"):
        assert slug_problem(taken) is None, taken


@given(st.from_regex(r"[a-z0-9]{1,10}(-[a-z0-9]{1,10}){0,4}", fullmatch=True))
def test_slugs_are_fixed_points(slug: str) -> None:
    assert slugify(slug) == slug


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("a" * 100, "a" * 56),
        ("abcdefg " * 10, "-".join(["abcdefg"] * 7)),  # cut at 56, then the trailing "-" dropped
        ("00000000-0000-0000-0000-000000000000", "device-00000000-0000-0000-0000-000000000000"),
        ("ABCDEF01-2345-6789-ABCD-EF0123456789", "device-abcdef01-2345-6789-abcd-ef0123456789"),
    ],
)
def test_derived_slugs_are_short_and_never_look_like_an_id(name: str, slug: str) -> None:
    """These names used to give slugs that `slug_problem` refuses: over 64 characters, or an id."""
    assert slugify(name) == slug
    assert slug_problem(slug) is None


# Near-valid slugs: the allowed characters and a few others, around the length limit, and ids.
SLUG_TEXTS = st.one_of(
    st.from_regex(r"[a-z0-9_A-Z. -]{0,70}", fullmatch=True),
    st.uuids().map(str),
    st.uuids().map(lambda value: str(value).upper()),
    st.text(max_size=70),
)


@given(SLUG_TEXTS)
def test_any_text_is_a_slug_or_has_a_problem(text: str) -> None:
    problem = slug_problem(text)
    if problem is None:
        assert 1 <= len(text) <= MAX_SLUG_LENGTH
        assert re.fullmatch(r"[a-z0-9][a-z0-9_-]*", text)
        with contextlib.suppress(ValueError):
            assert str(uuid.UUID(text)) != text  # never an id as the API writes ids
    else:
        assert problem
