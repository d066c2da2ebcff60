"""The docs index: one episode per chunk in an embedded store, hybrid recall (MiniLM + BM25).

``DocsIndex`` works in one process (tests); ``DocsIndexActor`` hosts one in a named Ray actor so
that the embedding model loads once and every executor's ``docs_search`` reaches the same index
(``RayDocsIndex``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, Protocol

import ray
from pydantic import BaseModel, ConfigDict, Field

from examples.rag.chunks import Chunk
from memory import (
    EmbeddedStore,
    Embedder,
    Episode,
    LocalEmbedder,
    LocalMemory,
    RecallQuery,
    RecallWeights,
)

INDEX_ACTOR = "troupe-rag-docs"
"""Name of the index actor that ``rag_tools()`` looks up."""
NAMESPACE = "rag-docs"
# Documents do not age and are all equally important: rank by the match alone.
RELEVANCE_ONLY = RecallWeights(recency=0.0, importance=0.0)


class Passage(BaseModel):
    """A retrieved chunk and how well it matched."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    citation: str = Field(description="source#anchor.")
    source: str = Field(description="Document path, relative to the docs folder.")
    title: str = Field(description="Heading path.")
    text: str = Field(description="The passage.")
    score: float = Field(description="Hybrid relevance, 0 to 1.")


class Searcher(Protocol):
    """What ``docs_search`` needs: the best passages for a query."""

    async def search(self, query: str, *, k: int) -> list[Passage]:
        """Up to ``k`` passages, best first."""
        ...


def chunk_episode(chunk: Chunk) -> Episode:
    """The stored form of a chunk: its id derives from the citation and the piece index."""
    return Episode.create(
        kind="observation",
        content=f"{chunk.title}\n{chunk.text}",
        agent="rag-ingest",
        namespace=NAMESPACE,
        key=f"{chunk.citation}:{chunk.part}",
        provenance="external",
        metadata={"source": chunk.source, "anchor": chunk.anchor, "title": chunk.title},
    )


class DocsIndex:
    """Chunks in memory, searched by hybrid relevance.

    Args:
        embedder: Embeds chunks and queries; ``None``: keyword (BM25) search only.
    """

    def __init__(self, *, embedder: Embedder | None = None) -> None:
        self._memory = LocalMemory(EmbeddedStore(weights=RELEVANCE_ONLY), embedder=embedder)
        self._texts: dict[str, str] = {}

    async def add(self, chunks: Sequence[Chunk]) -> int:
        """Indexes chunks (again: a no-op); returns how many were new."""
        episodes = [chunk_episode(c) for c in chunks]
        for chunk, episode in zip(chunks, episodes, strict=True):
            self._texts[episode.id] = chunk.text
        return await self._memory.remember(episodes)

    async def search(self, query: str, *, k: int = 3) -> list[Passage]:
        """Up to ``k`` passages, best first; one per section (split pieces are merged away)."""
        found = await self._memory.recall(RecallQuery(text=query, namespace=NAMESPACE, k=3 * k))
        passages: dict[str, Passage] = {}
        for scored in found:
            meta = scored.episode.metadata
            citation = f"{meta['source']}#{meta['anchor']}"
            if citation in passages:
                continue
            passages[citation] = Passage(
                citation=citation,
                source=meta["source"],
                title=meta["title"],
                text=self._texts.get(scored.episode.id, scored.episode.content),
                score=round(scored.relevance, 4),
            )
        return list(passages.values())[:k]


class DocsIndexActor:
    """A ``DocsIndex`` with the bundled MiniLM, in a Ray actor."""

    def __init__(self) -> None:
        self._index = DocsIndex(embedder=LocalEmbedder())

    async def add(self, chunks: list[Chunk]) -> int:
        """See ``DocsIndex.add``."""
        return await self._index.add(chunks)

    async def search(self, query: str, k: int) -> list[Passage]:
        """See ``DocsIndex.search``."""
        return await self._index.search(query, k=k)


REMOTE_INDEX: Final[Any] = ray.remote(DocsIndexActor)


def start_index(chunks: Sequence[Chunk], *, name: str = INDEX_ACTOR) -> Any:
    """Starts the named index actor, indexes ``chunks`` and returns its handle (kill it after)."""
    handle = REMOTE_INDEX.options(name=name, num_cpus=0).remote()
    ray.get(handle.add.remote(list(chunks)))
    return handle


class RayDocsIndex:
    """A ``Searcher`` over the named index actor, looked up on first use."""

    def __init__(self, name: str = INDEX_ACTOR) -> None:
        self._name = name
        self._handle: Any = None

    async def search(self, query: str, *, k: int) -> list[Passage]:
        """One actor call."""
        if self._handle is None:
            self._handle = ray.get_actor(self._name)
        passages: list[Passage] = await self._handle.search.remote(query, k)
        return passages
