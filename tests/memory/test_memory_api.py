"""Pins the public API of ``memory``: changing it is a deliberate act."""

import memory


def test_all_is_pinned() -> None:
    assert memory.__all__ == [
        "EmbeddedStore",
        "Episode",
        "EpisodeKind",
        "EpisodicMemory",
        "LocalMemory",
        "RayMemory",
        "RecallQuery",
        "RecallWeights",
        "ScoredEpisode",
        "memory_actor",
    ]
    for name in memory.__all__:
        assert getattr(memory, name) is not None


def test_implementations_satisfy_the_protocol() -> None:
    local = memory.LocalMemory(memory.EmbeddedStore(None))
    assert isinstance(local, memory.EpisodicMemory)
    assert isinstance(memory.RayMemory(handle=None), memory.EpisodicMemory)  # type: ignore[arg-type]
