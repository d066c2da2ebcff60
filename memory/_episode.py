"""Episode models: what agents record, how they ask for it back, and what they get.

An episode's id is derived from where it came from (namespace, task, agent, step, kind), not
drawn at random, so a write retried after a crash or a redelivered message lands on the same
record instead of duplicating it.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

EpisodeKind = Literal[
    "observation", "action", "tool_result", "message", "reflection", "plan", "task_summary"
]
"""What an episode records; recall can filter on it."""

Provenance = Literal["user", "agent", "tool", "memory", "external"]
"""Where an episode's content came from; prompts treat non-agent text as data, not orders."""

MAX_CONTENT_CHARS = 20_000
MAX_METADATA_ENTRIES = 32
MAX_METADATA_CHARS = 65_536  # room for a plan's JSON

# Fixed forever: changing it changes every id and breaks idempotent re-writes of old episodes.
_EPISODE_ID_NAMESPACE = uuid.UUID("6f1d3c1e-8a4b-5b8e-9a57-2c1f0e7d4b93")


def utc_now() -> datetime:
    """Returns the current time as an aware UTC datetime (the default clock of this package)."""
    return datetime.now(UTC)


def _as_utc(value: datetime, field: str) -> datetime:
    # Naive datetimes are ambiguous across nodes in different time zones: refuse, don't guess.
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{field} must be timezone-aware (e.g. datetime.now(UTC)), got {value!r}")
    return value.astimezone(UTC)


def episode_id(
    *,
    namespace: str,
    task_id: str | None,
    agent: str,
    step_id: str | None,
    kind: EpisodeKind,
    key: str | None,
    content: str,
) -> str:
    """Derives an episode id from its origin so that retried writes are idempotent.

    Without a ``step_id`` or ``key`` the origin does not single out one episode (an agent
    records many observations per task), so a digest of the content stands in for the key:
    identical retries still collapse, distinct episodes never overwrite each other.

    Returns:
        A UUID5 string.
    """
    if step_id is None and key is None:
        key = "content-sha256:" + hashlib.sha256(content.encode()).hexdigest()
    # JSON keeps the parts unambiguous ("a/b" + "c" never equals "a" + "b/c").
    name = json.dumps([namespace, task_id, agent, step_id, kind, key])
    return str(uuid.uuid5(_EPISODE_ID_NAMESPACE, name))


class Episode(BaseModel):
    """One thing an agent saw, did or concluded, as stored in episodic memory.

    Build new episodes with :meth:`Episode.create`, which derives the id; the constructor is
    for loading stored episodes.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1, description="Deterministic id; see Episode.create.")
    namespace: str = Field(
        default="default", min_length=1, description="Isolation scope; recall never crosses it."
    )
    kind: EpisodeKind = Field(description="What the episode records.")
    content: str = Field(
        max_length=MAX_CONTENT_CHARS, description="The text that is recalled and scored."
    )
    agent: str = Field(min_length=1, description="Name of the agent that recorded it.")
    task_id: str | None = Field(default=None, description="Task it belongs to, if any.")
    step_id: str | None = Field(default=None, description="Plan step it belongs to, if any.")
    created_at: datetime = Field(description="When it happened, timezone-aware, stored in UTC.")
    importance: float = Field(
        default=0.5, ge=0.0, le=1.0, description="How much it matters, 0 (trivial) to 1."
    )
    tags: tuple[str, ...] = Field(default=(), description="Free labels; recall can require them.")
    provenance: Provenance = Field(default="agent", description="Where the content came from.")
    trusted: bool = Field(
        default=False,
        description="Whether the content may be followed as instructions; untrusted by default.",
    )
    metadata: dict[str, str] = Field(
        default_factory=dict,
        description="Small string map (e.g. a plan's JSON); not searched, returned as is.",
    )
    links: tuple[str, ...] = Field(
        default=(), description="Ids of the episodes this one was derived from (sources)."
    )
    embedding_model: str | None = Field(
        default=None, description="Model that embedded the content; None when not embedded."
    )
    expires_at: datetime | None = Field(
        default=None,
        description="When it stops being recalled and may be forgotten; None never expires.",
    )
    last_accessed: datetime | None = Field(
        default=None,
        description=(
            "When it was last recalled before the recall that returned it; None if never. "
            "Tracked by the store in memory, not persisted."
        ),
    )

    @field_validator("content")
    @classmethod
    def _content_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("content must contain non-whitespace text")
        return value

    @field_validator("created_at")
    @classmethod
    def _created_at_utc(cls, value: datetime) -> datetime:
        return _as_utc(value, "created_at")

    @field_validator("expires_at", "last_accessed")
    @classmethod
    def _optional_utc(cls, value: datetime | None) -> datetime | None:
        return None if value is None else _as_utc(value, "expires_at/last_accessed")

    @model_validator(mode="after")
    def _expires_after_creation(self) -> Self:
        if self.expires_at is not None and self.expires_at <= self.created_at:
            raise ValueError(
                f"expires_at ({self.expires_at}) must be after created_at ({self.created_at})"
            )
        return self

    def expired(self, now: datetime) -> bool:
        """Whether the episode's TTL has run out at ``now``."""
        return self.expires_at is not None and self.expires_at <= now

    @field_validator("metadata")
    @classmethod
    def _metadata_small(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > MAX_METADATA_ENTRIES:
            raise ValueError(
                f"metadata has {len(value)} entries; at most {MAX_METADATA_ENTRIES} are allowed"
            )
        size = sum(len(k) + len(v) for k, v in value.items())
        if size > MAX_METADATA_CHARS:
            raise ValueError(
                f"metadata holds {size} characters; at most {MAX_METADATA_CHARS} are allowed"
            )
        return value

    @classmethod
    def create(
        cls,
        *,
        kind: EpisodeKind,
        content: str,
        agent: str,
        namespace: str = "default",
        task_id: str | None = None,
        step_id: str | None = None,
        key: str | None = None,
        created_at: datetime | None = None,
        importance: float = 0.5,
        tags: tuple[str, ...] = (),
        provenance: Provenance = "agent",
        trusted: bool = False,
        metadata: dict[str, str] | None = None,
        links: tuple[str, ...] = (),
        ttl: timedelta | None = None,
    ) -> Episode:
        """Builds an episode whose id is derived from its origin.

        Args:
            kind: What the episode records.
            content: The text to store and search.
            agent: The recording agent.
            namespace: Isolation scope.
            task_id: Task it belongs to.
            step_id: Plan step it belongs to.
            key: Extra discriminator when one step records several episodes of one kind
                (e.g. the tool call index). Without ``step_id`` and ``key`` the content
                itself discriminates.
            created_at: When it happened; now (UTC) by default.
            importance: 0 to 1.
            tags: Free labels.
            provenance: Where the content came from.
            trusted: Whether the content may be followed as instructions.
            metadata: Small string map returned with the episode.
            links: Ids of the episodes this one was derived from.
            ttl: How long after ``created_at`` it expires; ``None`` keeps it forever.

        Returns:
            The validated episode.

        Raises:
            pydantic.ValidationError: If a field is invalid (blank content, importance out of
                range, naive datetime, ...).
            ValueError: If ``ttl`` is not positive.
        """
        created = utc_now() if created_at is None else created_at
        if ttl is not None and ttl <= timedelta(0):
            raise ValueError(f"ttl must be positive, got {ttl}")
        return cls(
            id=episode_id(
                namespace=namespace,
                task_id=task_id,
                agent=agent,
                step_id=step_id,
                kind=kind,
                key=key,
                content=content,
            ),
            namespace=namespace,
            kind=kind,
            content=content,
            agent=agent,
            task_id=task_id,
            step_id=step_id,
            created_at=created,
            importance=importance,
            tags=tags,
            provenance=provenance,
            trusted=trusted,
            metadata={} if metadata is None else metadata,
            links=links,
            expires_at=None if ttl is None else created + ttl,
        )


class MemoryFilter(BaseModel):
    """Which episodes an operation applies to: every given condition must hold.

    Unknown fields are refused (``extra="forbid"``), so a misspelt filter is an error rather
    than a filter that silently matches everything.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    namespace: str = Field(default="default", min_length=1, description="Scope to search.")
    kinds: tuple[EpisodeKind, ...] | None = Field(
        default=None, description="Only these kinds; None means any."
    )
    agent: str | None = Field(default=None, description="Only episodes of this agent.")
    task_id: str | None = Field(default=None, description="Only episodes of this task.")
    tags: tuple[str, ...] = Field(
        default=(), description="Only episodes carrying all of these tags."
    )
    since: datetime | None = Field(
        default=None, description="Only episodes created at or after this time (inclusive)."
    )
    until: datetime | None = Field(
        default=None,
        description="Only episodes created before this time (exclusive); forget by age with it.",
    )
    ids: tuple[str, ...] | None = Field(
        default=None, description="Only episodes with these ids; None means any."
    )

    @field_validator("since", "until")
    @classmethod
    def _bounds_utc(cls, value: datetime | None) -> datetime | None:
        return None if value is None else _as_utc(value, "since/until")

    @model_validator(mode="after")
    def _window_not_empty(self) -> Self:
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise ValueError(f"since ({self.since}) must be before until ({self.until})")
        return self


class RecallQuery(MemoryFilter):
    """What to recall: text and/or a vector to match, how many, and filters that must all hold.

    With an embedder configured, the memory embeds ``text`` when no ``vector`` is given.
    """

    text: str = Field(
        default="",
        max_length=MAX_CONTENT_CHARS,
        description="Text to match; empty (and no vector) ranks by recency and importance only.",
    )
    vector: tuple[float, ...] | None = Field(
        default=None,
        min_length=1,
        description="Query embedding; must have the store's dimension.",
    )
    k: int = Field(default=5, ge=1, le=100, description="Maximum number of episodes returned.")


class ScoredEpisode(BaseModel):
    """A recalled episode with its score and the components the score was made of."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    episode: Episode = Field(description="The recalled episode.")
    score: float = Field(description="Weighted sum of the components; higher ranks first.")
    relevance: float = Field(
        ge=0.0, le=1.0, description="Hybrid match with the query (text and vector), 0 to 1."
    )
    keyword: float = Field(
        default=0.0, ge=0.0, le=1.0, description="BM25 match divided by the best candidate's."
    )
    similarity: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Cosine similarity to the query vector, >= 0."
    )
    recency: float = Field(ge=0.0, le=1.0, description="Exponential decay by age, 0 to 1.")
    importance: float = Field(ge=0.0, le=1.0, description="The episode's importance, 0 to 1.")
