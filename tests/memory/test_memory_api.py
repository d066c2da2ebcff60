"""Pins the public API of ``memory``: changing it is a deliberate act."""

import memory


def test_all_is_pinned() -> None:
    assert memory.__all__ == [
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
    for name in memory.__all__:
        assert getattr(memory, name) is not None


def test_implementations_satisfy_the_protocol() -> None:
    local = memory.LocalMemory(memory.EmbeddedStore(None))
    assert isinstance(local, memory.EpisodicMemory)
    assert isinstance(memory.RayMemory(handle=None), memory.EpisodicMemory)  # type: ignore[arg-type]
    assert isinstance(memory.LocalEmbedder(), memory.Embedder)
    assert isinstance(memory.OpenAIEmbedder("http://127.0.0.1:1/v1"), memory.Embedder)
    assert isinstance(memory.CachedEmbedder(memory.LocalEmbedder()), memory.Embedder)
    assert issubclass(memory.WeaviateMemory, memory.EpisodicMemory)
