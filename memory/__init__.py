"""Episodic memory shared by all agents: episodes, embeddings, hybrid recall scoring, the
embedded store, the Ray actor that hosts it, and the Weaviate backend."""

from memory._embedded import EmbeddedStore
from memory._embedders import LocalEmbedder, OpenAIEmbedder, bundled_minilm_path
from memory._embedding import CachedEmbedder, Embedder
from memory._episode import Episode, EpisodeKind, MemoryFilter, RecallQuery, ScoredEpisode
from memory._local import LocalMemory
from memory._protocol import EpisodicMemory, RecallWeights
from memory._ray import RayMemory, memory_actor
from memory._weaviate import WeaviateMemory, WeaviateSettings

__all__ = [
    "CachedEmbedder",
    "EmbeddedStore",
    "Embedder",
    "Episode",
    "EpisodeKind",
    "EpisodicMemory",
    "LocalEmbedder",
    "LocalMemory",
    "MemoryFilter",
    "OpenAIEmbedder",
    "RayMemory",
    "RecallQuery",
    "RecallWeights",
    "ScoredEpisode",
    "WeaviateMemory",
    "WeaviateSettings",
    "bundled_minilm_path",
    "memory_actor",
]
