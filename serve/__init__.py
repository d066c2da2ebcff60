"""OpenAI-compatible model serving on Ray Serve, backed by llama.cpp and the bundled model.

Quick start (a Ray is started or joined by ``deploy``)::

    from serve import ServeSettings, deploy
    base_url = deploy(ServeSettings())  # http://127.0.0.1:8000/v1
    # openai.OpenAI(base_url=base_url, api_key="unused").chat.completions.create(...)

Or with the Serve CLI: ``serve run serve/config.yaml``.
"""

from serve._api import EngineBackend, ModelBackend, create_app
from serve._app import app_builder, build_app, deploy, shutdown
from serve._engine import Engine, bundled_model_path, create_engine
from serve._errors import (
    APIError,
    APIErrorReport,
    AuthenticationError,
    ContextLengthExceededError,
    EngineFailedError,
    ErrorDetail,
    ErrorResponse,
    InvalidRequestError,
    ModelNotFoundError,
    ModelUnavailableError,
)
from serve._llama_cpp import LlamaCppEngine
from serve._settings import ModelSettings, ServeSettings
from serve._types import (
    AssistantMessage,
    ChatCompletionChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatMessage,
    ChunkChoice,
    ChunkDelta,
    CompletionUsage,
    JsonObjectResponseFormat,
    JsonSchemaResponseFormat,
    JsonSchemaSpec,
    ModelCard,
    ModelList,
    ResponseFormat,
    StreamOptions,
    TextResponseFormat,
)

__all__ = [
    "APIError",
    "APIErrorReport",
    "AssistantMessage",
    "AuthenticationError",
    "ChatCompletionChoice",
    "ChatCompletionChunk",
    "ChatCompletionRequest",
    "ChatCompletionResponse",
    "ChatMessage",
    "ChunkChoice",
    "ChunkDelta",
    "CompletionUsage",
    "ContextLengthExceededError",
    "Engine",
    "EngineBackend",
    "EngineFailedError",
    "ErrorDetail",
    "ErrorResponse",
    "InvalidRequestError",
    "JsonObjectResponseFormat",
    "JsonSchemaResponseFormat",
    "JsonSchemaSpec",
    "LlamaCppEngine",
    "ModelBackend",
    "ModelCard",
    "ModelList",
    "ModelNotFoundError",
    "ModelSettings",
    "ModelUnavailableError",
    "ResponseFormat",
    "ServeSettings",
    "StreamOptions",
    "TextResponseFormat",
    "app_builder",
    "build_app",
    "bundled_model_path",
    "create_app",
    "create_engine",
    "deploy",
    "shutdown",
]
