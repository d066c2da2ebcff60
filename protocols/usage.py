"""Model use: what each reply cost, so the coordinator can hold a task to its budget."""

from __future__ import annotations

from pydantic import Field

from protocols._base import Message


class Usage(Message):
    """Model use behind a reply: what budgets count (calls, tokens) and which prompts ran."""

    model_calls: int = Field(default=0, ge=0, description="Chat completions made.")
    prompt_tokens: int = Field(default=0, ge=0, description="Prompt tokens over those calls.")
    completion_tokens: int = Field(default=0, ge=0, description="Completion tokens over them.")
    templates: tuple[str, ...] = Field(
        default=(),
        max_length=64,
        description="name@sha256-prefix of the prompt template of each call, in call order.",
    )

    @property
    def tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            model_calls=self.model_calls + other.model_calls,
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            templates=(*self.templates, *other.templates)[-64:],
        )
