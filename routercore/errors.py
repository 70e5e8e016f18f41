"""The error taxonomy. Handlers raise the RouterError family; `app.py` maps them to each API's
error format. `ConfigError` is the one configuration error of the router, the agent and the
fake node: their command lines catch it and exit 2, the fake node answers it with 400."""

from __future__ import annotations


class ConfigError(ValueError):
    """A setting has an invalid value; the message names the setting (and its source, where
    there are several)."""


class RouterError(Exception):
    """Base: carries an HTTP status, a user-facing message and an OpenAI-style type/code."""

    status = 500
    error_type = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        self.headers = headers or []


class ClientError(RouterError):
    """The request is wrong: 4xx with a message for the user."""

    status = 400
    error_type = "invalid_request_error"
    code = "invalid_request"


class Unauthorized(ClientError):
    status = 401
    error_type = "authentication_error"
    code = "invalid_api_key"


class NotFound(ClientError):
    status = 404
    error_type = "not_found_error"
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class PayloadTooLarge(ClientError):
    status = 413
    code = "payload_too_large"


class ModelUnavailable(RouterError):
    """Nodes list the model but none can take the request now (unreachable, offline, breaker
    open, all busy past the queue wait). 503 + Retry-After: clients retry it, unlike a 404."""

    status = 503
    error_type = "service_unavailable"
    code = "model_unavailable"

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message, headers=[("retry-after", str(retry_after))])


class NoCapacity(ModelUnavailable):
    """Every node for the model is busy and the queue wait ran out (or the queue is full)."""


class UpstreamError(RouterError):
    """The node failed (502) or was too slow (504) and no other node could take over."""

    status = 502
    error_type = "upstream_error"
    code = "upstream_error"


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"
