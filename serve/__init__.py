"""OpenAI-compatible model serving on Ray Serve: llama.cpp, transformers and vLLM chat,
sentence-transformers embeddings, passthrough to external APIs, with fallbacks between models,
and ``HandleClient`` for callers inside the cluster (the ``openai`` interface, no HTTP hop).

Quick start (a Ray is started or joined by ``deploy``)::

    from serve import ServeSettings, deploy
    base_url = deploy(ServeSettings())  # http://127.0.0.1:8000/v1
    # openai.OpenAI(base_url=base_url, api_key="unused").chat.completions.create(...)

Or with the Serve CLI: ``serve run serve/config.yaml``.
"""

from serve._api import EngineBackend, ModelBackend, create_app
from serve._app import app_builder, build_app, deploy, proxy_url, shutdown
from serve._client import ChunkStream, HandleClient
from serve._embedding_types import (
    Embedding,
    EmbeddingRequest,
    EmbeddingResponse,
    EmbeddingUsage,
    EncodingFormat,
)
from serve._engine import Engine, bundled_embedding_model_path, bundled_model_path, create_engine
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
from serve._fallback import FallbackBackend
from serve._llama_cpp import LlamaCppEngine
from serve._passthrough import PassthroughEngine
from serve._sentence_transformers import SentenceTransformersEngine
from serve._settings import (
    LlamaCppSettings,
    ModelSettings,
    PassthroughSettings,
    SentenceTransformersSettings,
    ServeSettings,
    TransformersSettings,
    VllmSettings,
)
from serve._transformers import ResponseFormatNotMetError, TransformersEngine
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
    FunctionCall,
    FunctionDefinition,
    JsonObjectResponseFormat,
    JsonSchemaResponseFormat,
    JsonSchemaSpec,
    ModelCard,
    ModelList,
    NamedFunction,
    NamedToolChoice,
    ResponseFormat,
    StreamOptions,
    TextResponseFormat,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    ToolDefinition,
)
from serve._vllm import VllmEngine, require_vllm

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
    "ChunkStream",
    "CompletionUsage",
    "ContextLengthExceededError",
    "Embedding",
    "EmbeddingRequest",
    "EmbeddingResponse",
    "EmbeddingUsage",
    "EncodingFormat",
    "Engine",
    "EngineBackend",
    "EngineFailedError",
    "ErrorDetail",
    "ErrorResponse",
    "FallbackBackend",
    "FunctionCall",
    "FunctionDefinition",
    "HandleClient",
    "InvalidRequestError",
    "JsonObjectResponseFormat",
    "JsonSchemaResponseFormat",
    "JsonSchemaSpec",
    "LlamaCppEngine",
    "LlamaCppSettings",
    "ModelBackend",
    "ModelCard",
    "ModelList",
    "ModelNotFoundError",
    "ModelSettings",
    "ModelUnavailableError",
    "NamedFunction",
    "NamedToolChoice",
    "PassthroughEngine",
    "PassthroughSettings",
    "ResponseFormat",
    "ResponseFormatNotMetError",
    "SentenceTransformersEngine",
    "SentenceTransformersSettings",
    "ServeSettings",
    "StreamOptions",
    "TextResponseFormat",
    "ToolCall",
    "ToolCallDelta",
    "ToolChoice",
    "ToolDefinition",
    "TransformersEngine",
    "TransformersSettings",
    "VllmEngine",
    "VllmSettings",
    "app_builder",
    "build_app",
    "bundled_embedding_model_path",
    "bundled_model_path",
    "create_app",
    "create_engine",
    "deploy",
    "proxy_url",
    "require_vllm",
    "shutdown",
]
