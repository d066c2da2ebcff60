"""Errors, split by who must act, and the ``ErrorReport`` message that carries them across actors.

Whether an error is worth retrying is data on the error (``retryable``), never guessed from its
text. Errors cross process boundaries as ``ErrorReport`` messages, not pickled tracebacks.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field


class TroupeError(Exception):
    """Root of every error troupe raises on purpose.

    Attributes:
        code: A stable, machine-readable identifier (``snake_case``).
        retryable: Whether repeating the same operation may succeed.
    """

    default_code: ClassVar[str] = "troupe_error"
    default_retryable: ClassVar[bool] = False

    def __init__(self, message: str, *, code: str | None = None, retryable: bool | None = None):
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.retryable = self.default_retryable if retryable is None else retryable


class ConfigurationError(TroupeError):
    """The user's setup is wrong (settings, missing model file, unreachable service chosen)."""

    default_code = "configuration_error"


class MessageValidationError(TroupeError):
    """A payload is not a valid troupe message; the text lists each bad field and why."""

    default_code = "invalid_message"


class TaskError(TroupeError):
    """A task could not finish (budget reached, plan impossible, reviewer rejected it)."""

    default_code = "task_failed"


class AgentError(TroupeError):
    """An agent could not handle a message (model output unusable, tool failed)."""

    default_code = "agent_error"


class RemoteAgentError(AgentError):
    """An agent in another process answered with an ``ErrorReport``."""

    default_code = "remote_agent_error"

    def __init__(self, report: ErrorReport):
        super().__init__(
            f"{report.sender}: {report.message}", code=report.code, retryable=report.retryable
        )
        self.report = report


class DeliveryError(TroupeError):
    """The bus could not deliver a message or got no reply in time."""

    default_code = "delivery_failed"
    default_retryable = True


class BackPressureError(DeliveryError):
    """A bounded queue is full; publish again later."""

    default_code = "back_pressure"


class ErrorReport(BaseModel):
    """An error as a message: what went wrong, where, and whether to retry."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["error.report"] = "error.report"
    task_id: str | None = Field(default=None, description="Task the failure belongs to, if any.")
    sender: str = Field(description="Agent or component that reports the error.")
    code: str = Field(description="Stable machine-readable error code.")
    error_type: str = Field(description="Class name of the original exception.")
    message: str = Field(description="Human-readable explanation that says what to fix.")
    retryable: bool = Field(description="Whether repeating the operation may succeed.")

    @classmethod
    def from_exception(
        cls, exc: BaseException, *, sender: str, task_id: str | None = None
    ) -> ErrorReport:
        """Builds a report from any exception; non-troupe errors are reported as not retryable."""
        if isinstance(exc, TroupeError):
            return cls(
                task_id=task_id,
                sender=sender,
                code=exc.code,
                error_type=type(exc).__name__,
                message=exc.message,
                retryable=exc.retryable,
            )
        return cls(
            task_id=task_id,
            sender=sender,
            code="internal_error",
            error_type=type(exc).__name__,
            message=str(exc) or type(exc).__name__,
            retryable=False,
        )
