"""Builds an agent of a role from the settings tree: its model client, tools and memory."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any, Literal, cast

import ray

from agents._executor import Executor
from agents._mcp import tool_name
from agents._model import FallbackModelClient, ModelClient, OpenAIModelClient
from agents._planner import Planner
from agents._ray_tools import RayToolRunner
from agents._reviewer import Reviewer
from agents._settings import ModelEndpoint, TroupeSettings
from agents._toolkit import ToolRegistry, TypedTool
from agents._tools import default_tools
from memory import CachedEmbedder, EpisodicMemory, OpenAIEmbedder, RayMemory, WeaviateMemory
from protocols import ConfigurationError

Role = Literal["planner", "executor", "reviewer"]
ROLES: tuple[Role, ...] = ("planner", "executor", "reviewer")


def model_client(endpoint: ModelEndpoint) -> ModelClient:
    """The client for an endpoint: its ``client`` factory, else ``openai`` over its URL.

    With ``fallbacks``, a ``FallbackModelClient`` over the endpoint and then each fallback
    (built the same way, so a fallback may have its own factory or fallbacks); a fallback
    without ``base_url`` or ``client`` uses the endpoint's ``base_url``.
    """
    if not endpoint.fallbacks:
        return _single_client(endpoint)
    chain = [(_label(endpoint), _single_client(endpoint))]
    for fallback in endpoint.fallbacks:
        if fallback.base_url is None and fallback.client is None:
            fallback = fallback.model_copy(update={"base_url": endpoint.base_url})
        chain.append((_label(fallback), model_client(fallback)))
    return FallbackModelClient(chain)


def _label(endpoint: ModelEndpoint) -> str:
    where = endpoint.client or endpoint.base_url or "no endpoint"
    return f"{endpoint.model} at {where}"


def _single_client(endpoint: ModelEndpoint) -> ModelClient:
    if endpoint.client is not None:
        return _custom_client(endpoint)
    if not endpoint.base_url:
        raise ConfigurationError(
            "a model endpoint has no base_url: deploy the Serve app first (troupe run does) or "
            "set agents.<role>.base_url to an OpenAI-compatible URL"
        )
    return OpenAIModelClient(endpoint)


def _custom_client(endpoint: ModelEndpoint) -> ModelClient:
    assert endpoint.client is not None
    module_name, _, attribute = endpoint.client.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(
            f"model client {endpoint.client!r} cannot be loaded ({exc}); it must name an "
            "importable module:callable on every node"
        ) from None
    client = factory(endpoint)
    if not callable(getattr(client, "complete", None)):
        raise ConfigurationError(
            f"model client {endpoint.client!r} returned {type(client).__name__}, which has no "
            "complete(request) method"
        )
    return cast(ModelClient, client)


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
    return RayMemory(
        ray.get_actor(config.actor_name),
        embedder=embedder,
        lanes=settings.bus.config.direct_lanes,
    )


def tool_registry(
    settings: TroupeSettings,
    *,
    memory: EpisodicMemory | None = None,
    mcp_tools: Sequence[TypedTool[Any]] = (),
) -> ToolRegistry:
    """The team's tools as configured (``agents.tools``): built-ins, custom tools, then the
    tools of the MCP servers (``mcp_tools``: loaded by the caller, on its event loop, with
    ``load_mcp_tools(settings.agents.tools.mcp.servers)``).

    Tools that declare ``resources`` run as Ray tasks reserving them (``RayToolRunner``); the
    others (MCP tools among them) run in the calling process.

    Raises:
        ConfigurationError: When a custom tool cannot be loaded, a name is taken twice, or a
            tool is named ``answer``.
    """
    registry = default_tools(settings.agents.tools, memory=memory, runner=RayToolRunner())
    registry.extend(mcp_tools)
    return registry


def high_impact_tools(settings: TroupeSettings) -> frozenset[str]:
    """Names of the configured tools with ``impact == "high"``: a step that uses one needs a
    person's approval before it is dispatched (executors refuse them anywhere else).

    MCP tools are named here without connecting to their servers: ``high_impact`` lists a
    server's tool names, which become ``<server>_<tool>`` (the loader refuses a name the
    server does not offer, so no gated tool can hide under another name).
    """
    registry = tool_registry(settings)
    local = {n for n in registry.names() if _impact(registry, n) == "high"}
    mcp = {
        tool_name(server.name, tool)
        for server in settings.agents.tools.mcp.servers
        for tool in server.high_impact
    }
    return frozenset(local | mcp)


def _impact(registry: ToolRegistry, name: str) -> str:
    tool = registry.get(name)
    return tool.impact if tool is not None else "low"


def build_agent(
    role: str,
    settings: TroupeSettings,
    memory: EpisodicMemory,
    *,
    name: str,
    mcp_tools: Sequence[TypedTool[Any]] = (),
) -> Planner | Executor | Reviewer:
    """A planner, executor or reviewer configured from ``settings``.

    Args:
        role: ``planner``, ``executor`` or ``reviewer``.
        settings: The settings tree.
        memory: The team's episodic memory.
        name: The agent's name.
        mcp_tools: Tools of the MCP servers, loaded on the event loop that will run the agent
            (``AgentActor`` does it before the first message); without them the agent has only
            the built-in and custom tools.
    """
    agents = settings.agents
    namespace = settings.memory.namespace
    if role == "planner":
        return Planner(
            model_client(agents.planner),
            memory,
            tool_registry(settings, memory=memory, mcp_tools=mcp_tools),
            allowed=agents.executor_tools,
            namespace=namespace,
            max_attempts=agents.max_plan_attempts,
            max_chars=agents.max_field_chars,
        )
    if role == "executor":
        return Executor(
            model_client(agents.executor),
            memory,
            tool_registry(settings, memory=memory, mcp_tools=mcp_tools),
            name=name,
            namespace=namespace,
            allowed=agents.executor_tools,
            workspace_root=agents.workspace_dir,
            max_tool_turns=agents.max_tool_turns,
            context_tokens=agents.context_tokens,
            tool_reply_tokens=agents.tool_reply_tokens,
            recall_episodes=agents.recall_episodes,
            write_window_s=agents.episode_write_window_s,
            max_chars=agents.max_answer_chars,
            max_input_chars=agents.max_input_chars,
        )
    if role == "reviewer":
        return Reviewer(
            model_client(agents.reviewer),
            max_chars=agents.max_field_chars,
            tools=tool_registry(settings, memory=memory, mcp_tools=mcp_tools),
            workspace_root=agents.workspace_dir,
        )
    raise ConfigurationError(f"unknown agent role {role!r}; roles are {', '.join(ROLES)}")
