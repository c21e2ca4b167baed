"""Device slugs: the URL-safe names the HTTP API accepts wherever it accepts a device id.

Pure. The store picks the free variant (`<slug>-2`, `<slug>-3`, ...) when a derived slug is taken.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final

DEFAULT_SLUG: Final = "device"
"""The slug of a name that has no letters or digits at all."""

MAX_SLUG_LENGTH: Final = 64
# A derived slug leaves room for the `-N` the store appends when it is taken (up to `-9999999`).
_MAX_DERIVED_LENGTH: Final = MAX_SLUG_LENGTH - 8

_NOT_SLUG_CHARS: Final = re.compile(r"[^a-z0-9]+")


def slugify(name: str) -> str:
    """Derive a slug from a display name: `"Heat Pump #2"` -> `"heat-pump-2"`.

    Case-folded, accents dropped (`"Wärme"` -> `"warme"`), every run of characters outside
    `[a-z0-9]` becomes one `-`, leading and trailing `-` are trimmed; an empty result is
    `DEFAULT_SLUG`. The result always matches `^[a-z0-9]+(-[a-z0-9]+)*$` and passes `slug_problem`,
    even with the store's `-N` appended: it is cut to 56 characters, and one that looks like a
    device id (a name copied from an id) gets a `device-` prefix.
    """
    # NFKD splits "ä" into "a" + a combining mark, which is dropped, so accented names keep their
    # letters instead of turning into dashes.
    decomposed = unicodedata.normalize("NFKD", name.casefold())
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    slug = _NOT_SLUG_CHARS.sub("-", stripped).strip("-")[:_MAX_DERIVED_LENGTH].rstrip("-")
    if _UUID.fullmatch(slug):
        return f"{DEFAULT_SLUG}-{slug}"
    return slug or DEFAULT_SLUG


_SLUG: Final = re.compile(rf"[a-z0-9][a-z0-9_-]{{0,{MAX_SLUG_LENGTH - 1}}}")
_UUID: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def slug_problem(slug: str) -> str | None:
    """Why `slug` cannot be a device slug, or None if it can.

    Slugs stand in for ids in every URL, so they are URL-safe (lower-case letters, digits, `-`
    and `_`, at most 64) and never look like an id, which would make `{device}` ambiguous.
    """
    if not _SLUG.fullmatch(slug):
        return "must be 1 to 64 lower-case letters, digits, '-' or '_', starting with a letter or a digit"
    if _UUID.fullmatch(slug):
        return "must not look like a device id"
    return None
