"""Tests for `gateway.slugs.slugify`."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.slugs import DEFAULT_SLUG, slugify

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


@given(st.text())
def test_any_name_gives_a_slug(name: str) -> None:
    slug = slugify(name)
    assert SLUG.fullmatch(slug), slug
    assert slugify(slug) == slug


@given(st.from_regex(SLUG, fullmatch=True))
def test_slugs_are_fixed_points(slug: str) -> None:
    assert slugify(slug) == slug
