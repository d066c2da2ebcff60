"""The sentence-transformers engine: text embeddings (the bundled all-MiniLM-L6-v2 by default).

The model is loaded from a local directory only; nothing is downloaded. Deployments of this
engine run with ``HF_HUB_OFFLINE=1`` (see ``serve._app``), so a missing file fails fast instead of
hanging on a hub lookup.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from protocols import ConfigurationError
from serve._embedding_types import EmbeddingRequest, EmbeddingResponse, embedding_response
from serve._engine import Engine, bundled_embedding_model_path
from serve._errors import ContextLengthExceededError, InvalidRequestError, ModelUnavailableError
from serve._settings import SentenceTransformersSettings

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer


class SentenceTransformersEngine(Engine):
    """An embeddings model run in-process by sentence-transformers (torch).

    Requests are serialised (one forward pass at a time, ``n_threads`` torch threads): on a small
    CPU, parallel passes only fight over the cores. Each request's texts are encoded in batches of
    ``batch_size``.

    Args:
        settings: Which model directory, device, threads and limits.

    Raises:
        ConfigurationError: The model directory is missing or cannot be loaded.
    """

    def __init__(self, settings: SentenceTransformersSettings) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        path = Path(settings.path) if settings.path else bundled_embedding_model_path()
        if not path.is_dir():
            raise ConfigurationError(f"embeddings model directory not found: {path} (path)")
        if settings.device == "cpu":
            torch.set_num_threads(settings.n_threads)
        try:
            self._model: SentenceTransformer | None = SentenceTransformer(
                str(path), device=settings.device, local_files_only=True
            )
        except (OSError, ValueError, RuntimeError) as error:
            raise ConfigurationError(f"cannot load the embeddings model {path}: {error}") from error
        self._model_id = settings.name
        self._batch_size = settings.batch_size
        self._max_inputs = settings.max_inputs
        # Tokens one input may have, leaving room for the [CLS]/[SEP] the tokenizer adds.
        self._max_tokens = int(self._model.max_seq_length or 512) - 2
        self._async_lock = asyncio.Lock()
        self._thread_lock = threading.Lock()

    @property
    def model_id(self) -> str:
        """Model id the engine serves."""
        return self._model_id

    @property
    def context_size(self) -> int:
        """Tokens one input may have."""
        return self._max_tokens

    @property
    def dimensions(self) -> int:
        """Length of every vector."""
        model = self._require_model()
        dimension = getattr(model, "get_embedding_dimension", None)  # newer name
        if dimension is None:
            dimension = model.get_sentence_embedding_dimension
        return int(dimension() or 0)

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        """Embeds the request's texts (normalised vectors, as all-MiniLM-L6-v2 is used)."""
        texts = request.texts
        if len(texts) > self._max_inputs:
            raise InvalidRequestError(
                f"input has {len(texts)} texts; model {self._model_id!r} takes at most "
                f"{self._max_inputs} per request",
                param="input",
            )
        async with self._async_lock:
            vectors, tokens = await asyncio.to_thread(self._encode, texts)
        return embedding_response(
            vectors, model=self._model_id, encoding_format=request.encoding_format, tokens=tokens
        )

    def check_health(self) -> None:
        """Raises ``ModelUnavailableError`` once the engine has been closed."""
        self._require_model()

    def close(self) -> None:
        """Drops the model; the engine answers no more requests afterwards."""
        with self._thread_lock:
            self._model = None

    def _require_model(self) -> SentenceTransformer:
        if self._model is None:
            raise ModelUnavailableError(f"model {self._model_id!r} is closed")
        return self._model

    def _encode(self, texts: list[str]) -> tuple[np.ndarray, list[int]]:
        with self._thread_lock:
            model = self._require_model()
            ids = model.tokenizer(texts, add_special_tokens=False)["input_ids"]
            tokens = [len(row) for row in ids]
            too_long = [index for index, count in enumerate(tokens) if count > self._max_tokens]
            if too_long:
                index = too_long[0]
                raise ContextLengthExceededError(
                    f"input[{index}] has {tokens[index]} tokens; this model's maximum is "
                    f"{self._max_tokens} tokens per input. Split or shorten the text.",
                    param="input",
                )
            vectors = model.encode(
                texts,
                batch_size=self._batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
            return np.asarray(vectors), tokens
