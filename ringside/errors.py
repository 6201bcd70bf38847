"""Every error Ringside answers with, rendered once at the edge as the SPEC §6 envelope.

RingsideError
 ├── InvalidRequest            400 invalid_request_error / invalid_request, tools_unsupported,
 │    │                            vision_unsupported, reasoning_unsupported
 │    ├── InvalidModelRef      400 invalid_model_ref
 │    ├── RequestTimeout       408 request_timeout
 │    └── RequestTooLarge      413 request_too_large
 ├── Unauthorized              401 authentication_error / invalid_api_key, invalid_client_token
 ├── PaymentRequired           402 insufficient_quota / customer_budget_exceeded,
 │                                 customer_wallet_empty, wallet_empty
 ├── Forbidden                 403 permission_error / origin_mismatch, customer_mismatch,
 │                                 client_token_not_allowed
 ├── NotFound                  404 not_found_error / not_found
 ├── MethodNotAllowed          405 invalid_request_error / method_not_allowed
 ├── Conflict                  409 conflict_error / customer_exists, no_wallet,
 │                                 refund_exceeds_debit
 ├── ResponseSchemaValidationFailed
 │                             422 api_error / response_schema_validation_failed (carries the
 │                                 offending content in the envelope's ``content``)
 ├── RateLimited               429 rate_limit_error / rate_limited
 ├── UpstreamError             502 api_error / upstream_error (carries the upstream status)
 │    └── UpstreamUnavailable  503 api_error / upstream_unavailable
 ├── UpstreamTimeout           504 api_error / upstream_timeout
 ├── ModelUnavailable          503 api_error / model_unavailable
 ├── NoActiveProviderKeys      503 api_error / no_active_provider_keys
 └── ServiceUnavailable        503 api_error / service_unavailable
"""

from __future__ import annotations

from typing import Any, ClassVar


class RingsideError(Exception):
    status: ClassVar[int] = 500
    type: ClassVar[str] = "api_error"
    code: ClassVar[str] = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after_seconds: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.retry_after_seconds = retry_after_seconds
        if code is not None:
            self.code = code  # type: ignore[misc]

    def envelope(self, request_id: str) -> dict[str, Any]:
        return {
            "error": {
                "type": self.type,
                "code": self.code,
                "message": self.message,
                "param": self.param,
                "request_id": request_id,
                "retry_after_seconds": self.retry_after_seconds,
            }
        }


class InvalidRequest(RingsideError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class InvalidModelRef(InvalidRequest):
    code = "invalid_model_ref"


class RequestTimeout(InvalidRequest):
    status = 408
    code = "request_timeout"


class RequestTooLarge(InvalidRequest):
    status = 413
    code = "request_too_large"


class Unauthorized(RingsideError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PaymentRequired(RingsideError):
    status = 402
    type = "insufficient_quota"
    code = "customer_budget_exceeded"


class Forbidden(RingsideError):
    status = 403
    type = "permission_error"
    code = "permission_denied"


class NotFound(RingsideError):
    status = 404
    type = "not_found_error"
    code = "not_found"


class MethodNotAllowed(RingsideError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class Conflict(RingsideError):
    status = 409
    type = "conflict_error"
    code = "conflict"


class ResponseSchemaValidationFailed(RingsideError):
    """The model's answer did not satisfy ``response_format`` after every attempt allowed.
    The envelope carries the last answer's full text as ``error.content``."""

    status = 422
    type = "api_error"
    code = "response_schema_validation_failed"

    def __init__(self, message: str, *, content: str | None, **kw: Any) -> None:
        super().__init__(message, param="response_format", **kw)
        self.content = content
        self.billed_tokens = 0  # every attempt was billed: set by the call that settled them
        self.headers: dict[str, str] = {}  # the call's Ringside headers, for a replay

    def envelope(self, request_id: str) -> dict[str, Any]:
        body = super().envelope(request_id)
        body["error"]["content"] = self.content
        return body


class RateLimited(RingsideError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limited"


class UpstreamError(RingsideError):
    status = 502
    type = "api_error"
    code = "upstream_error"

    def __init__(self, message: str, *, upstream_status: int | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.upstream_status = upstream_status


class UpstreamUnavailable(UpstreamError):
    status = 503
    code = "upstream_unavailable"


class UpstreamTimeout(RingsideError):
    status = 504
    type = "api_error"
    code = "upstream_timeout"


class ModelUnavailable(RingsideError):
    status = 503
    type = "api_error"
    code = "model_unavailable"


class NoActiveProviderKeys(RingsideError):
    status = 503
    type = "api_error"
    code = "no_active_provider_keys"


class ServiceUnavailable(RingsideError):
    status = 503
    type = "api_error"
    code = "service_unavailable"


def internal_error_envelope(request_id: str) -> dict[str, Any]:
    """The fixed body of a 500: never any detail of what went wrong (that goes to the log)."""
    return {
        "error": {
            "type": "api_error",
            "code": "internal_error",
            "message": f"Internal error. Quote request id {request_id} when reporting it.",
            "param": None,
            "request_id": request_id,
            "retry_after_seconds": None,
        }
    }
