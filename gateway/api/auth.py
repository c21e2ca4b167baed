"""API tokens on requests: `X-Enapter-Auth-Token` -> the caller's role."""

from __future__ import annotations

from aiohttp import web

from gateway.api import errors
from gateway.api.render import Handler
from gateway.api.services import SERVICES
from gateway.model import Role
from gateway.tokens import hash_token

TOKEN_HEADER = "X-Enapter-Auth-Token"
ROLE = web.RequestKey("role", Role)
# Routes that need no token.
PUBLIC_PATHS = frozenset({"/metrics"})


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """401 without a token, 403 for an unknown or revoked one; otherwise remember the role."""
    if request.path in PUBLIC_PATHS:
        return await handler(request)
    token = request.headers.get(TOKEN_HEADER, "").strip()
    if not token:
        raise errors.missing_token()
    # Looked up by the hash of a 256-bit random token: there is no secret to time against.
    record = await request.app[SERVICES].store.token_by_hash(hash_token(token))
    if record is None:
        raise errors.invalid_token()
    request[ROLE] = record.role
    return await handler(request)


def require(request: web.Request, minimum: Role) -> Role:
    """The caller's role, or 403 when it is below `minimum`."""
    role = request[ROLE]
    if not role.at_least(minimum):
        raise errors.forbidden(f"This action needs the {minimum.value} role or higher.")
    return role
