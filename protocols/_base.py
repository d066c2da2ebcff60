"""Shared building blocks for messages: the frozen base model and typed identifiers."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, StringConstraints

TaskId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")]
"""A task identifier: 1-64 characters of letters, digits, ``_ . : -``."""

StepId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")]
"""A step identifier within one plan: 1-32 characters of letters, digits, ``_ -``."""

AgentName = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class Message(BaseModel):
    """Base of every message: immutable, and unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(frozen=True, extra="forbid")
