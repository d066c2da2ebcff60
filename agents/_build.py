"""Builds an agent of a role from the settings tree: its model client, tools and memory."""

from __future__ import annotations

from typing import Literal

import ray

from agents._executor import Executor
from agents._model import ModelClient, OpenAIModelClient
from agents._planner import Planner
from agents._reviewer import Reviewer
from agents._settings import ModelEndpoint, TroupeSettings
from agents._tools import default_tools
from memory import CachedEmbedder, EpisodicMemory, OpenAIEmbedder, RayMemory, WeaviateMemory
from protocols import ConfigurationError

Role = Literal["planner", "executor", "reviewer"]
ROLES: tuple[Role, ...] = ("planner", "executor", "reviewer")


def model_client(endpoint: ModelEndpoint) -> ModelClient:
    """The ``openai``-backed client for an endpoint; it must have a URL by now."""
    if not endpoint.base_url:
        raise ConfigurationError(
            "a model endpoint has no base_url: deploy the Serve app first (troupe run does) or "
            "set agents.<role>.base_url to an OpenAI-compatible URL"
        )
    return OpenAIModelClient(endpoint)


def shared_memory(settings: TroupeSettings) -> EpisodicMemory:
    """The team's episodic memory as configured: the named store actor, or Weaviate.

    Texts are embedded through the configured OpenAI-compatible embeddings endpoint (troupe's
    own Serve app by default), behind a cache, so recall is hybrid (vectors + keywords).
    """
    config = settings.memory
    embedder = None
    if config.embedding_model is not None:
        if not config.embeddings_base_url:
            raise ConfigurationError(
                "memory.embedding_model is set but there is no embeddings URL: deploy the Serve "
                "app first (troupe run does), set memory.embeddings_base_url, or set "
                "memory.embedding_model to null for keyword-only recall"
            )
        embedder = CachedEmbedder(
            OpenAIEmbedder(config.embeddings_base_url, model=config.embedding_model)
        )
    if config.backend == "weaviate":
        assert config.weaviate is not None  # the settings validator guarantees it
        return WeaviateMemory(config.weaviate, embedder=embedder)
    return RayMemory(ray.get_actor(config.actor_name), embedder=embedder)


def build_agent(
    role: str, settings: TroupeSettings, memory: EpisodicMemory, *, name: str
) -> Planner | Executor | Reviewer:
    """A planner, executor or reviewer configured from ``settings``."""
    agents = settings.agents
    namespace = settings.memory.namespace
    if role == "planner":
        return Planner(
            model_client(agents.planner),
            memory,
            default_tools(),
            namespace=namespace,
            max_attempts=agents.max_plan_attempts,
            max_chars=agents.max_field_chars,
        )
    if role == "executor":
        return Executor(
            model_client(agents.executor),
            memory,
            default_tools(),
            name=name,
            namespace=namespace,
            max_chars=agents.max_answer_chars,
            max_input_chars=agents.max_input_chars,
        )
    if role == "reviewer":
        return Reviewer(model_client(agents.reviewer), max_chars=agents.max_field_chars)
    raise ConfigurationError(f"unknown agent role {role!r}; roles are {', '.join(ROLES)}")
