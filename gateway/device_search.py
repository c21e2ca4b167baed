"""Finding devices: what a device list asks for (full-text terms, filters, an order), and tags. Pure.

`q` is plain text, never FTS syntax. It is split at whitespace into terms; a device matches when
every term occurs, as a substring and in any letter case, in its name, slug, hardware id or one of
its metadata values (the store's FTS5 `trigram` index). A trigram index cannot look up fewer than
three characters, so a shorter term is refused (400 naming `q`) rather than answered by a scan or
silently matching nothing.
"""

from __future__ import annotations

import enum
import unicodedata
from dataclasses import dataclass

from gateway.model import Connectivity, DeviceType

MIN_TERM_LENGTH = 3
MAX_TERMS = 10
MAX_TERM_LENGTH = 200


class DeviceOrder(enum.StrEnum):
    """`order=` of the device list, in the Enapter spelling of the other lists' orders."""

    NAME_ASC = "NAME_ASC"
    NAME_DESC = "NAME_DESC"
    CREATED_AT_ASC = "CREATED_AT_ASC"
    CREATED_AT_DESC = "CREATED_AT_DESC"
    UPDATED_AT_ASC = "UPDATED_AT_ASC"
    UPDATED_AT_DESC = "UPDATED_AT_DESC"
    # Devices never seen sort as the oldest: first ascending, last descending.
    LAST_SEEN_AT_ASC = "LAST_SEEN_AT_ASC"
    LAST_SEEN_AT_DESC = "LAST_SEEN_AT_DESC"


@dataclass(frozen=True, slots=True)
class DeviceFilter:
    """Device list filters; None = no filter. Filters combine (AND); within one `.in` list a
    device matches any value. An empty collection matches nothing."""

    terms: tuple[str, ...] = ()
    types: frozenset[DeviceType] | None = None
    connectivity: frozenset[Connectivity] | None = None
    # Tag ids or names (names case-insensitively).
    tags: frozenset[str] | None = None
    blueprint_ids: frozenset[str] | None = None
    created_from: float | None = None
    created_before: float | None = None
    raised_alert_names: frozenset[str] | None = None
    # None: ordered by id, as before any of this existed.
    order: DeviceOrder | None = None


class SearchTextError(ValueError):
    """`q` that cannot be searched; the message says why."""


def search_terms(q: str) -> tuple[str, ...]:
    """`q` split into the terms that must all occur; () for a blank `q`."""
    terms = tuple(dict.fromkeys(q.split()))
    if len(terms) > MAX_TERMS:
        raise SearchTextError(f"at most {MAX_TERMS} words")
    for term in terms:
        if len(term) < MIN_TERM_LENGTH:
            raise SearchTextError(
                f"each word must have at least {MIN_TERM_LENGTH} characters (substring search); "
                f"{term!r} is shorter"
            )
        if len(term) > MAX_TERM_LENGTH:
            raise SearchTextError(f"each word must have at most {MAX_TERM_LENGTH} characters")
        # SQLite reads a query string only up to a NUL; no name or value holds control characters.
        if any(unicodedata.category(character) in ("Cc", "Cs") for character in term):
            raise SearchTextError("must not contain control characters")
    return terms


def fts_query(terms: tuple[str, ...]) -> str:
    """An FTS5 MATCH expression in which each term is one quoted string (so `"`, `*`, `AND`, `-`,
    `:` and parentheses are plain text), all required."""
    return " AND ".join('"' + term.replace('"', '""') + '"' for term in terms)


@dataclass(frozen=True, slots=True)
class Tag:
    """A label devices can carry; names are unique regardless of letter case."""

    id: str
    name: str
    created_at: float
    updated_at: float
    device_count: int = 0


MAX_TAG_NAME_LENGTH = 64


def tag_name_problem(name: str) -> str | None:
    """Why `name` cannot be a tag name, or None. Commas would split in `tag.in=a,b`; `/`, `{` and
    `}` could not name the tag in a path (`/v3/tags/{tag}`)."""
    if not name.strip():
        return "must not be blank"
    if name != name.strip():
        return "must not start or end with whitespace"
    if len(name) > MAX_TAG_NAME_LENGTH:
        return f"must be at most {MAX_TAG_NAME_LENGTH} characters"
    if any(character in ",/{}" or not character.isprintable() for character in name):
        return "must not contain , / { } or control characters"
    return None
