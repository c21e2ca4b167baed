"""API tokens: how they look, and how they are stored (only a hash).

Pure. Tokens are 256-bit random strings, so a plain SHA-256 is a sufficient storage hash: there is
nothing to brute-force.
"""

from __future__ import annotations

import base64
import hashlib

PREFIX = "egw_"
RANDOM_BYTES = 32


def format_token(random_bytes: bytes) -> str:
    """The printable token made from `random_bytes` (which must be RANDOM_BYTES long)."""
    if len(random_bytes) != RANDOM_BYTES:
        raise ValueError(f"a token needs {RANDOM_BYTES} random bytes")
    return PREFIX + base64.urlsafe_b64encode(random_bytes).decode().rstrip("=")


def hash_token(token: str) -> str:
    """What the store keeps and looks tokens up by."""
    return hashlib.sha256(token.encode()).hexdigest()
