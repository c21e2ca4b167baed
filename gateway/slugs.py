"""Device slugs: the URL-safe names the HTTP API accepts wherever it accepts a device id.

Pure. The store picks the free variant (`<slug>-2`, `<slug>-3`, ...) when a derived slug is taken.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final

DEFAULT_SLUG: Final = "device"
"""The slug of a name that has no letters or digits at all."""

_NOT_SLUG_CHARS: Final = re.compile(r"[^a-z0-9]+")


def slugify(name: str) -> str:
    """Derive a slug from a display name: `"Heat Pump #2"` -> `"heat-pump-2"`.

    Case-folded, accents dropped (`"Wärme"` -> `"warme"`), every run of characters outside
    `[a-z0-9]` becomes one `-`, leading and trailing `-` are trimmed; an empty result is
    `DEFAULT_SLUG`. The result always matches `^[a-z0-9]+(-[a-z0-9]+)*$`.
    """
    # NFKD splits "ä" into "a" + a combining mark, which is dropped, so accented names keep their
    # letters instead of turning into dashes.
    decomposed = unicodedata.normalize("NFKD", name.casefold())
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    slug = _NOT_SLUG_CHARS.sub("-", stripped).strip("-")
    return slug or DEFAULT_SLUG
