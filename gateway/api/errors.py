"""Typed API errors. Handlers raise them; one middleware renders the Enapter error envelope.

`{"errors": [{"code", "message", "details"?}]}` with at least one element (`enapter-http-api.md` §1.6).
"""

from __future__ import annotations

from gateway.model import JsonObject


class ApiError(Exception):
    """An error with its HTTP status, a stable code and a message for humans."""

    def __init__(self, status: int, code: str, message: str, details: JsonObject | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details

    def envelope(self) -> JsonObject:
        """The JSON body for this error."""
        error: JsonObject = {"code": self.code, "message": self.message}
        if self.details is not None:
            error["details"] = self.details
        return {"errors": [error]}


def bad_request(message: str) -> ApiError:
    """400: the request could not be parsed (a named parameter: `invalid_parameter`)."""
    return ApiError(400, "bad_request", message)


def invalid_parameter(parameter: str, message: str) -> ApiError:
    """400 naming the query parameter or body field that is wrong."""
    return ApiError(400, "invalid_query_parameter", f"{parameter}: {message}", {"parameter": parameter})


def missing_token() -> ApiError:
    """401: no token at all."""
    return ApiError(
        401,
        "missing_header",
        "Authentication token is missing.",
        {"header": "X-Enapter-Auth-Token"},
    )


def invalid_token() -> ApiError:
    """403: a token that is unknown or revoked."""
    return ApiError(
        403,
        "invalid_header",
        "Authentication token is invalid.",
        {"header": "X-Enapter-Auth-Token"},
    )


def forbidden(message: str) -> ApiError:
    """403: the token's role is too low."""
    return ApiError(403, "forbidden", message)


def not_found(what: str) -> ApiError:
    """404 for an unknown resource."""
    return ApiError(404, "not_found", f"{what} not found.")


def conflict(message: str) -> ApiError:
    """409: the entity already exists."""
    return ApiError(409, "conflict", message)


def unprocessable(message: str) -> ApiError:
    """422: understood, but cannot be done."""
    return ApiError(422, "unprocessable_entity", message)


def too_many_requests(retry_after: int) -> ApiError:
    """429: over a rate limit; `Retry-After` says when to come back."""
    return ApiError(
        429,
        "too_many_requests",
        f"Too many requests; try again in {retry_after} s.",
        {"retry_after": retry_after},
    )


def unavailable(message: str) -> ApiError:
    """503: a component the request needs (the broker) is down; retrying later may work."""
    return ApiError(503, "service_unavailable", message)


def invalid_query(parameter: str, message: str) -> ApiError:
    """422: a well-formed request whose values cannot be processed (Grafana's tests show this code)."""
    return ApiError(
        422, "invalid_query_parameter_format", f"{parameter}: {message}", {"parameter": parameter}
    )
