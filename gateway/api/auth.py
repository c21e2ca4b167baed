"""Who may call what: `X-Enapter-Auth-Token` -> the caller's role, checked against each route's
minimum role, and rate limits per token and per client address.

The minimum role of every route is declared once, where the route is added (`gateway.api.app`);
a route without a declaration cannot be added. Roles follow `enapter-http-api.md` §2.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from gateway.api import errors, lookup
from gateway.api.ratelimit import Decision, WindowLimiter
from gateway.api.render import Handler
from gateway.api.services import SERVICES
from gateway.config import RateLimitConfig
from gateway.model import Role
from gateway.tokens import hash_token

TOKEN_HEADER = "X-Enapter-Auth-Token"
ROLE = web.RequestKey("role", Role)
RATE = web.RequestKey("rate", Decision)


@dataclass(slots=True)
class Access:
    """Each route's minimum role (None = public) and the rate limiters."""

    limits: RateLimitConfig
    clock: Callable[[], float] = time.monotonic
    minimum_roles: dict[web.AbstractRoute, Role | None] = field(default_factory=dict)
    per_token: WindowLimiter = field(init=False)
    per_address: WindowLimiter = field(init=False)
    failures: WindowLimiter = field(init=False)

    def __post_init__(self) -> None:
        window = self.limits.window
        self.per_token = WindowLimiter(self.limits.requests, window)
        self.per_address = WindowLimiter(self.limits.anonymous_requests, window)
        self.failures = WindowLimiter(self.limits.auth_failures, window)


ACCESS = web.AppKey("access", Access)


def _counted(request: web.Request, decision: Decision) -> None:
    """Remember the decision for the response headers; 429 when the request is over the limit."""
    request[RATE] = decision
    if not decision.allowed:
        raise errors.too_many_requests(decision.retry_after)


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Rate limits, then 401 without a token, 403 for an unknown or revoked one or too low a role."""
    access = request.app[ACCESS]
    now = access.clock()
    address = request.remote or "unknown"
    if access.failures.exhausted(address, now):
        # Guessing tokens is slowed to `auth_failures` per window: until the window ends no token
        # from this address is even looked at, so a right guess cannot be told from a wrong one.
        _counted(request, access.failures.peek(address, now))
    # Unknown paths (404/405) need a token too, so that they reveal nothing to strangers.
    minimum = access.minimum_roles.get(request.match_info.route, Role.READONLY)
    token = request.headers.get(TOKEN_HEADER, "").strip()
    if minimum is None or not token:
        _counted(request, access.per_address.hit(address, now))
        if minimum is None:
            return await handler(request)
        raise errors.missing_token()
    # The site comes with the token (one round trip): nearly every handler needs it next.
    record, site = await request.app[SERVICES].store.token_and_site(hash_token(token))
    if site is not None:
        request[lookup.SITE] = site
    if record is None:
        request[RATE] = access.failures.hit(address, now)
        raise errors.invalid_token()
    _counted(request, access.per_token.hit(record.id, now))
    request[ROLE] = record.role
    if not record.role.at_least(minimum):
        raise errors.forbidden(f"This action needs the {minimum.value} role or higher.")
    return await handler(request)


async def rate_limit_headers(request: web.Request, response: web.StreamResponse) -> None:
    """`X-RateLimit-*` on every limited response (errors included), `Retry-After` on 429."""
    decision = request.get(RATE)
    if decision is None or decision.limit == 0:
        return
    response.headers["X-RateLimit-Limit"] = str(decision.limit)
    response.headers["X-RateLimit-Remaining"] = str(decision.remaining)
    response.headers["X-RateLimit-Reset"] = str(math.ceil(decision.reset_after))
    if response.status == 429:
        response.headers["Retry-After"] = str(decision.retry_after)
