"""The one exception tree of the Bimplus client.

Nothing from httpx (or any other transport) leaves ``bimfs.api``: every foreign exception is
mapped to one of these in a single place (``bimfs.api.error_map.map_transport_errors``)::

    ApiError                          anything the API client reports
    ├── TransportError                the request did not complete (connect refused, reset, ...)
    │   └── IncompleteBodyError       a body ended before its announced length (never short data)
    ├── ApiTimeoutError               the request's deadline passed
    ├── StatusError                   the server answered with an error status
    │   ├── BadRequestError           400
    │   ├── UnauthorizedError         401 (after one refresh and retry)
    │   ├── ForbiddenError            403 (missing rights, locks, quota)
    │   ├── NotFoundError             404
    │   ├── ConflictError             409
    │   ├── PayloadTooLargeError      413
    │   ├── TooManyRequestsError      429 (after the retries)
    │   └── ServerError               5xx (after the retries)
    ├── ProtocolError                 an answer not shaped as documented (names the call)
    ├── AuthError                     no usable credentials, or a login failed
    └── UploadOutcomeUnknownError     an upload may or may not have landed; never reported as done

``retryable`` tells callers (the uploader, the content cache) whether trying again later can help.
"""

from __future__ import annotations


class ApiError(Exception):
    """Base of every error the Bimplus client raises."""

    retryable: bool = False

    def __init__(self, message: str, *, call: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.call = call

    def __str__(self) -> str:
        if self.call:
            return f"{self.call}: {self.message}"
        return self.message


class TransportError(ApiError):
    """The request could not be sent or its answer could not be read completely."""

    retryable = True


class IncompleteBodyError(TransportError):
    """A response body ended before the length the server announced."""


class ApiTimeoutError(ApiError):
    """The request did not finish before its deadline."""

    retryable = True


class StatusError(ApiError):
    """The server answered with an error status. ``body`` is a short, sanitised excerpt."""

    status: int = 0

    def __init__(self, status: int, body: str = "", *, call: str | None = None) -> None:
        reason = _REASONS.get(status, "HTTP error")
        text = f"{status} {reason}"
        if body:
            text += f": {body}"
        super().__init__(text, call=call)
        self.status = status
        self.body = body


class BadRequestError(StatusError):
    """400: the server refused the request as malformed."""


class UnauthorizedError(StatusError):
    """401: the token is missing, invalid or expired (and refreshing did not help)."""


class ForbiddenError(StatusError):
    """403: the user lacks the right, the object is locked, or the team is over quota."""


class NotFoundError(StatusError):
    """404: the object does not exist (any more)."""


class ConflictError(StatusError):
    """409: the request conflicts with the object's state."""


class PayloadTooLargeError(StatusError):
    """413: the upload is larger than the server accepts."""


class TooManyRequestsError(StatusError):
    """429: throttled, still after retrying. ``retry_after`` in seconds when the server said."""

    retryable = True

    def __init__(
        self,
        status: int,
        body: str = "",
        *,
        call: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(status, body, call=call)
        self.retry_after = retry_after


class ServerError(StatusError):
    """5xx: the server failed, still after retrying."""

    retryable = True


class ProtocolError(ApiError):
    """An answer that is not shaped as documented (bad JSON, missing mandatory field)."""


class AuthError(ApiError):
    """No usable credentials were found, or logging in / refreshing failed."""


class UploadOutcomeUnknownError(ApiError):
    """An upload was interrupted and the server's version list could not settle its outcome."""

    retryable = True


_REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Payload Too Large",
    416: "Range Not Satisfiable",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}

_BY_STATUS: dict[int, type[StatusError]] = {
    400: BadRequestError,
    401: UnauthorizedError,
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    429: TooManyRequestsError,
}


def status_error(
    status: int, body: str = "", *, call: str | None = None, retry_after: float | None = None
) -> StatusError:
    """Build the most specific ``StatusError`` for an HTTP status."""
    if status == 429:
        return TooManyRequestsError(status, body, call=call, retry_after=retry_after)
    if status >= 500:
        return ServerError(status, body, call=call)
    cls = _BY_STATUS.get(status, StatusError)
    return cls(status, body, call=call)
