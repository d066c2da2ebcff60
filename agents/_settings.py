"""The one settings tree, loaded at the edge (the CLI) and handed down; nothing below reads env."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from agents._builtin_tools import ToolsSettings
from memory import WeaviateSettings
from protocols import Budget, BusConfig, ConfigurationError, describe_validation_error
from serve import ServeSettings


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelEndpoint(_Settings):
    """Where one role's model lives."""

    base_url: str | None = Field(
        default=None,
        description="OpenAI-compatible base URL (ending in /v1). None: troupe's own Serve app.",
    )
    model: str = Field(default="smollm2-135m", description="Model id to ask for.")
    api_key: str | None = Field(default=None, description="Bearer key for the endpoint.")
    timeout_s: float = Field(default=120.0, gt=0, description="Per-call timeout.")
    max_attempts: int = Field(
        default=3, ge=1, le=10, description="Attempts on transport failures (tenacity)."
    )
    seed: int | None = Field(default=0, description="Sampling seed, for repeatable runs.")
    client: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
        description="module:callable that builds this role's ModelClient from the endpoint "
        "(a custom or scripted model); None: the openai client over base_url.",
    )
    fallbacks: tuple[ModelEndpoint, ...] = Field(
        default=(),
        description="Endpoints tried in order when this one fails for good (transport errors, "
        "timeouts or 5xx after its attempts, or a model it does not serve). A fallback "
        "without base_url or client uses this endpoint's base_url.",
    )


class AgentSettings(_Settings):
    """The agent team: models per role, pool size, and how hard to try."""

    planner: ModelEndpoint = Field(default_factory=ModelEndpoint)
    executor: ModelEndpoint = Field(default_factory=ModelEndpoint)
    reviewer: ModelEndpoint = Field(default_factory=ModelEndpoint)
    executors: int = Field(default=2, ge=1, le=64, description="Executor actors in the pool.")
    colocated: tuple[Literal["planner", "reviewer"], ...] = Field(
        default=("planner", "reviewer"),
        description="Roles that run inside the coordinator's actor (same process: a message "
        "to them is a function call, not a Ray round trip). The planner and reviewer only "
        "call their model and run checks; executors, which run tools and scale out, always "
        "get actors of their own. Empty: every agent in its own actor.",
    )
    num_cpus: float = Field(
        default=0.05, ge=0, description="CPU share each agent actor reserves (they mostly wait)."
    )
    max_plan_attempts: int = Field(
        default=2, ge=1, le=5, description="Model calls to get a valid plan before falling back."
    )

    @field_validator("colocated")
    @classmethod
    def _once_each(cls, roles: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(roles)) != len(roles):
            raise ValueError(f"names a role twice: {list(roles)}")
        return roles

    max_field_chars: int = Field(
        default=120, ge=16, le=2000, description="maxLength of free-text fields in model schemas."
    )
    max_answer_chars: int = Field(
        default=160, ge=16, le=4000, description="maxLength of a step's written answer."
    )
    max_input_chars: int = Field(
        default=600, ge=64, description="Longest earlier-step output quoted into a prompt."
    )
    request_timeout_s: float = Field(default=300.0, gt=0, description="Bus request timeout.")
    tools: ToolsSettings = Field(
        default_factory=ToolsSettings,
        description="The team's tools: which built-ins, their limits, and custom tools.",
    )
    executor_tools: tuple[str, ...] | None = Field(
        default=None,
        description="Tools executors may run (enforced outside the model); None: every "
        "registered tool. Plans only name these (and answer).",
    )
    max_tool_turns: int = Field(
        default=4,
        ge=1,
        le=32,
        description="Model turns of an answer step's tool loop; a step that has not answered "
        "by then fails with the reason.",
    )
    workspace_dir: Path = Field(
        default=Path(".troupe/workspaces"),
        description="Root of the per-task workspace directories tools work in.",
    )
    context_tokens: int = Field(
        default=1536,
        ge=256,
        description="Prompt budget of one model call in tokens (approximate: chars/4 plus "
        "per-message overhead); the bundled model's 2048 less room for the answer.",
    )
    tool_reply_tokens: int = Field(
        default=384,
        ge=32,
        description="max_tokens of a tool-loop turn (a tool call's arguments or the answer).",
    )
    episode_write_window_s: float = Field(
        default=0.1,
        ge=0,
        le=10,
        description="How long an executor gathers its steps' episodes before writing them to "
        "memory in one call (they are written behind the step's reply); 0: one call per step.",
    )
    recall_episodes: int = Field(
        default=2,
        ge=0,
        le=20,
        description="Relevant episodes of earlier tasks an executor recalls into its prompt.",
    )


class MemorySettings(_Settings):
    """Episodic memory: which backend, where it keeps its data, and how texts are embedded."""

    backend: Literal["embedded", "weaviate"] = Field(
        default="embedded",
        description="embedded: a store in a named Ray actor; weaviate: a Weaviate server "
        "(unreachable is an error, never a silent fallback).",
    )
    data_dir: Path = Field(default=Path(".troupe/memory"), description="Embedded store directory.")
    namespace: str = Field(default="default", description="Memory space for this deployment.")
    actor_name: str = Field(default="troupe-memory", description="Named Ray actor of the store.")
    weaviate: WeaviateSettings | None = Field(
        default=None, description="Connection settings; required when backend is weaviate."
    )
    embedding_model: str | None = Field(
        default="minilm-l6-v2",
        description="Embeddings model for hybrid recall; None: keyword recall only.",
    )
    embeddings_base_url: str | None = Field(
        default=None,
        description="OpenAI-compatible /v1 URL for embeddings. None: troupe's own Serve app.",
    )

    @model_validator(mode="after")
    def _weaviate_needs_settings(self) -> MemorySettings:
        if self.backend == "weaviate" and self.weaviate is None:
            raise ValueError("backend weaviate needs memory.weaviate (at least its url)")
        return self


class BusSettings(_Settings):
    """The Ray bus: delivery limits and where dead letters are kept."""

    config: BusConfig = Field(default_factory=BusConfig)
    dead_letters_path: Path = Field(
        default=Path(".troupe/bus/dead-letters.jsonl"),
        description="File of the dead-letter store (on the node that starts the team).",
    )
    actor_name: str = Field(default="troupe-dead-letters", description="Named Ray actor.")


class RaySettings(_Settings):
    """How to reach Ray."""

    address: str = Field(
        default="local", description='"local" starts a private Ray; "auto" or ray://... joins one.'
    )
    num_cpus: int | None = Field(
        default=None, description="Logical CPUs of a local Ray (None: Ray's default)."
    )
    namespace: str = Field(default="troupe", description="Ray namespace for named actors.")
    include_dashboard: bool = Field(
        default=False, description="Start the Ray dashboard with a local Ray (costs ~2 s, 150 MB)."
    )


class JournalSettings(_Settings):
    """The task journal: where it lives, how hard it syncs, and what it keeps."""

    enabled: bool = Field(
        default=True,
        description="Journal every task (needed for recovery, approvals, replay and audit).",
    )
    data_dir: Path = Field(
        default=Path(".troupe/journal"), description="Directory of the SQLite journal (head node)."
    )
    synchronous: Literal["FULL", "NORMAL"] = Field(
        default="FULL",
        description="FULL: what anyone is told of (a submit, an approval, an outcome) is fsync'd "
        "before they are told, the hot path's entries within 50 ms (a power loss in "
        "between re-runs a step with its idempotency key); NORMAL: survives process crashes, "
        "may lose the last entries on power loss.",
    )
    retention_max_age_days: float | None = Field(
        default=30.0, ge=0, description="Finished tasks older than this are pruned (None: keep)."
    )
    retention_keep_last: int | None = Field(
        default=10_000, ge=0, description="At most this many finished tasks are kept (None: all)."
    )
    compact_every: int = Field(
        default=100, ge=1, description="Apply the retention policy after this many finished tasks."
    )


class ApprovalSettings(_Settings):
    """Human approval gates: how long a step waits, and what happens when nobody answers."""

    timeout_s: float | None = Field(
        default=86_400.0, gt=0, description="Seconds a step waits for a decision (None: forever)."
    )
    on_timeout: Literal["reject", "escalate"] = Field(
        default="reject",
        description="reject: the step is rejected (the planner sees why); escalate: the request "
        "is re-published to the escalation topic and waits once more, then rejects.",
    )


class TroupeSettings(_Settings):
    """Everything troupe is configured by."""

    ray: RaySettings = Field(default_factory=RaySettings)
    serve: ServeSettings = Field(default_factory=ServeSettings)
    agents: AgentSettings = Field(default_factory=AgentSettings)
    memory: MemorySettings = Field(default_factory=MemorySettings)
    bus: BusSettings = Field(default_factory=BusSettings)
    budget: Budget = Field(default_factory=Budget, description="Default budget of a task.")
    journal: JournalSettings = Field(default_factory=JournalSettings)
    approvals: ApprovalSettings = Field(default_factory=ApprovalSettings)

    @classmethod
    def load(cls, path: Path | None = None) -> TroupeSettings:
        """Reads settings from a YAML, JSON or TOML file; no file means the defaults.

        Raises:
            ConfigurationError: naming the file and each invalid field.
        """
        if path is None:
            return cls()
        data = _read(path)
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigurationError(f"{path}: {describe_validation_error(exc)}") from None

    def with_local_endpoint(self, base_url: str) -> TroupeSettings:
        """Points every role whose ``base_url`` is unset at troupe's own Serve app."""
        roles = {
            role: endpoint.model_copy(update={"base_url": endpoint.base_url or base_url})
            for role, endpoint in (
                ("planner", self.agents.planner),
                ("executor", self.agents.executor),
                ("reviewer", self.agents.reviewer),
            )
        }
        memory = self.memory.model_copy(
            update={"embeddings_base_url": self.memory.embeddings_base_url or base_url}
        )
        return self.model_copy(
            update={"agents": self.agents.model_copy(update=roles), "memory": memory}
        )


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigurationError(f"cannot read settings file {path}: {exc.strerror}") from None
    try:
        if path.suffix == ".toml":
            data: Any = tomllib.loads(text)
        elif path.suffix == ".json":
            data = json.loads(text)
        else:
            data = yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"settings file {path} does not parse: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigurationError(f"settings file {path} must hold a mapping at the top level")
    return data
