"""HTTP-facing errors of the model API, in OpenAI's shape: ``{"error": {message, type, ...}}``.

An engine raises these; the API layer turns them into responses. Between Ray processes they travel
as ``APIErrorReport`` values (returned, not raised), so no traceback is pickled and the status code
survives the hop.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from protocols import TroupeError


class ErrorDetail(BaseModel):
    """The body of an OpenAI error: what went wrong and which request field to fix."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    message: str = Field(description="Human-readable explanation that says what to fix.")
    type: str = Field(description="Error family, e.g. `invalid_request_error`.")
    param: str | None = Field(default=None, description="Request field at fault, dotted.")
    code: str | None = Field(default=None, description="Stable machine-readable code.")


class ErrorResponse(BaseModel):
    """An OpenAI error response body."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    error: ErrorDetail = Field(description="The error.")


class APIErrorReport(BaseModel):
    """An ``APIError`` as a value, returned across a Ray call instead of raised."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    status_code: int = Field(description="HTTP status the edge should answer with.")
    error: ErrorDetail = Field(description="The OpenAI error body.")
    retryable: bool = Field(default=False, description="Whether repeating the call may succeed.")


class APIError(TroupeError):
    """An error the model API answers with a 4xx/5xx status and an OpenAI-shaped body.

    Attributes:
        status_code: HTTP status.
        error_type: OpenAI error family (``invalid_request_error``, ``server_error``...).
        param: The request field at fault, dotted (``messages.0.role``), if any.
    """

    default_status_code: ClassVar[int] = 400
    default_error_type: ClassVar[str] = "invalid_request_error"
    default_code = "invalid_request"
    default_param: ClassVar[str | None] = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status_code: int | None = None,
        error_type: str | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message, code=code, retryable=retryable)
        self.param = param if param is not None else self.default_param
        self.status_code = status_code or self.default_status_code
        self.error_type = error_type or self.default_error_type

    def detail(self) -> ErrorDetail:
        """The OpenAI error body for this error."""
        return ErrorDetail(
            message=self.message, type=self.error_type, param=self.param, code=self.code
        )

    def to_report(self) -> APIErrorReport:
        """This error as a value that can cross a Ray call."""
        return APIErrorReport(
            status_code=self.status_code, error=self.detail(), retryable=self.retryable
        )

    @classmethod
    def from_report(cls, report: APIErrorReport) -> APIError:
        """Rebuilds a raisable error from a report received over Ray."""
        return cls(
            report.error.message,
            param=report.error.param,
            code=report.error.code,
            status_code=report.status_code,
            error_type=report.error.type,
            retryable=report.retryable,
        )


class InvalidRequestError(APIError):
    """The request is well-formed JSON but asks for something invalid (400)."""


class ContextLengthExceededError(InvalidRequestError):
    """Prompt plus requested completion tokens do not fit the model's context window (400)."""

    default_code = "context_length_exceeded"
    default_param = "messages"


class AuthenticationError(APIError):
    """No bearer token, or one that is not among the configured API keys (401)."""

    default_status_code = 401
    default_code = "invalid_api_key"


class ModelNotFoundError(APIError):
    """The request names a model this app does not serve (404)."""

    default_status_code = 404
    default_code = "model_not_found"
    default_param = "model"


class ModelUnavailableError(APIError):
    """The model exists but cannot answer now (replica down, overloaded); retry later (503)."""

    default_status_code = 503
    default_error_type = "server_error"
    default_code = "model_unavailable"
    default_retryable = True


class EngineFailedError(APIError):
    """The engine broke while answering (a bug, not the request's fault) (500)."""

    default_status_code = 500
    default_error_type = "server_error"
    default_code = "engine_error"
