"""Episodic memory shared by all agents: episodes, recall scoring, the embedded store and the
Ray actor that hosts it."""

from memory._embedded import EmbeddedStore
from memory._episode import Episode, EpisodeKind, RecallQuery, ScoredEpisode
from memory._local import LocalMemory
from memory._protocol import EpisodicMemory, RecallWeights
from memory._ray import RayMemory, memory_actor

__all__ = [
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
