"""Wire models of the OpenAI embeddings API (``POST /v1/embeddings``)."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

EncodingFormat = Literal["float", "base64"]


class EmbeddingRequest(BaseModel):
    """``POST /v1/embeddings`` body."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(min_length=1, description="Id of a served embeddings model.")
    input: str | list[str] = Field(
        description="One text or a list of texts to embed (token arrays are not accepted)."
    )
    encoding_format: EncodingFormat = Field(
        default="float",
        description="`float` lists, or `base64` of little-endian float32 (what `openai` asks).",
    )
    dimensions: int | None = Field(
        default=None, description="Not supported: the model's full vectors are returned."
    )
    user: str | None = Field(default=None, description="End-user id (recorded nowhere yet).")

    @field_validator("input")
    @classmethod
    def _texts_not_empty(cls, value: str | list[str]) -> str | list[str]:
        texts = [value] if isinstance(value, str) else value
        if not texts:
            raise ValueError("send at least one text to embed")
        empty = [index for index, text in enumerate(texts) if not text]
        if empty:
            where = "input" if isinstance(value, str) else f"input[{empty[0]}]"
            raise ValueError(f"{where} is an empty string; every text must have content")
        return value

    @field_validator("dimensions")
    @classmethod
    def _no_dimensions(cls, dimensions: int | None) -> int | None:
        if dimensions is not None:
            raise ValueError("dimensions is not supported; leave it out for full vectors")
        return dimensions

    @property
    def texts(self) -> list[str]:
        """``input`` as a list."""
        return [self.input] if isinstance(self.input, str) else list(self.input)


class Embedding(BaseModel):
    """One vector of the answer."""

    model_config = ConfigDict(frozen=True)

    object: Literal["embedding"] = Field(default="embedding", description="Object type.")
    index: int = Field(description="Position of the text in `input`.")
    embedding: list[float] | str = Field(description="The vector, or its base64 float32 bytes.")


class EmbeddingUsage(BaseModel):
    """Token accounting of an embeddings request."""

    model_config = ConfigDict(frozen=True)

    prompt_tokens: int = Field(ge=0, description="Tokens of all inputs.")
    total_tokens: int = Field(ge=0, description="The same number (no completion).")


class EmbeddingResponse(BaseModel):
    """``POST /v1/embeddings`` answer."""

    model_config = ConfigDict(frozen=True)

    object: Literal["list"] = Field(default="list", description="Object type.")
    data: list[Embedding] = Field(description="One vector per input, in input order.")
    model: str = Field(description="Model that made the vectors.")
    usage: EmbeddingUsage = Field(description="Token accounting.")


def embedding_response(
    vectors: np.ndarray, *, model: str, encoding_format: EncodingFormat, tokens: Sequence[int]
) -> EmbeddingResponse:
    """The API answer for ``vectors`` (one row per input), encoded as the client asked."""
    rows = np.asarray(vectors, dtype="<f4")
    data = [
        Embedding(
            index=index,
            embedding=(
                base64.b64encode(row.tobytes()).decode("ascii")
                if encoding_format == "base64"
                else row.tolist()
            ),
        )
        for index, row in enumerate(rows)
    ]
    total = int(sum(tokens))
    return EmbeddingResponse(
        data=data, model=model, usage=EmbeddingUsage(prompt_tokens=total, total_tokens=total)
    )
