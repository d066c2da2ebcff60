"""One shared memory for the whole cluster: a named Ray actor hosting an ``EmbeddedStore``.

Every agent on every node gets the same actor by name (``memory_actor``) and talks to it
through ``RayMemory``.

Embedding happens on the caller's side (``RayMemory`` holds the embedder, lazily built in
each process), so the actor only stores and searches vectors.

Retries: Ray owns them in this layer. The actor restarts without limit and calls are retried
a few times (``max_task_retries``), which is safe because ``remember`` is idempotent by
episode id and the other methods only read.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

import numpy as np
import ray
from ray.actor import ActorHandle, ActorProxy
from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from memory._embedded import EmbeddedStore
from memory._embedding import Embedder, embed_episodes, embed_queries, embed_query
from memory._episode import Episode, MemoryFilter, RecallQuery, ScoredEpisode
from memory._protocol import RecallWeights, Vectors
from protocols import (
    ConfigurationError,
    DeliveryError,
    LaneAddress,
    LaneBroken,
    LaneRemoteError,
    LaneServer,
    LaneUnavailable,
    lane_call,
    pickle_natively,
)

_T = TypeVar("_T")

# Bounded so an actor that keeps dying on some input fails the call instead of hanging it.
_MAX_TASK_RETRIES = 3

pickle_natively(Episode, RecallQuery, ScoredEpisode, MemoryFilter)


class MemoryActor:
    """Ray actor body: one ``EmbeddedStore`` persisted under the data directory.

    Args:
        path: The store's JSON-lines file (a path on the node the actor runs on).
        weights: How recall ranks.
        dimension: Vector length of the store.
    """

    def __init__(
        self, path: str, weights: RecallWeights | None = None, dimension: int = 384
    ) -> None:
        self._store = EmbeddedStore(Path(path), weights=weights, dimension=dimension)
        self._lane = LaneServer(self, _LANE_METHODS)

    @ray.method
    def lane_address(self) -> LaneAddress | None:
        """Where callers on this node reach the store without a Ray call (see
        ``protocols.LaneServer``): served from a thread of its own, beside the Ray calls (the
        store is thread-safe); started on the first ask."""
        return self._lane.address_in_thread()

    @ray.method
    def lane_calls(self) -> int:
        """Calls answered over the lane so far (the rest came as Ray calls)."""
        return self._lane.served

    @ray.method
    def remember(self, episodes: Sequence[Episode], vectors: np.ndarray | None = None) -> int:
        """See ``EmbeddedStore.remember``."""
        return self._store.remember(episodes, vectors)

    @ray.method
    def forget(self, where: MemoryFilter) -> int:
        """See ``EmbeddedStore.forget``."""
        return self._store.forget(where)

    @ray.method
    def forget_expired(self, namespace: str = "default") -> int:
        """See ``EmbeddedStore.forget_expired``."""
        return self._store.forget_expired(namespace)

    @ray.method
    def recall(self, query: RecallQuery) -> list[ScoredEpisode]:
        """See ``EmbeddedStore.recall``."""
        return self._store.recall(query)

    @ray.method
    def recall_many(self, queries: Sequence[RecallQuery]) -> list[list[ScoredEpisode]]:
        """``recall`` for each query, in one call."""
        return [self._store.recall(query) for query in queries]

    @ray.method
    def count(self, namespace: str = "default") -> int:
        """See ``EmbeddedStore.count``."""
        return self._store.count(namespace)

    @ray.method
    def data_path(self) -> str:
        """The file this actor persists to, so callers can check they share the right one."""
        return str(self._store.path)


_LANE_METHODS = ("remember", "forget", "forget_expired", "recall", "recall_many", "count")

_RemoteMemoryActor = ray.remote(MemoryActor)


def memory_actor(
    data_dir: Path,
    *,
    name: str = "troupe-memory",
    namespace: str | None = None,
    lifetime: Literal["detached"] | None = None,
    weights: RecallWeights | None = None,
    dimension: int = 384,
    start_timeout_s: float = 60.0,
) -> ActorHandle[MemoryActor]:
    """Gets the named memory actor, creating it if no one has yet.

    The first caller creates it pinned to its own node, because the store's file lives on
    that node's disk: a restart elsewhere would come back empty. Blocks for one round trip
    to check the actor is up and uses the expected file.

    Args:
        data_dir: Directory holding the store file ``<name>.jsonl``.
        name: Ray actor name; agents sharing memory use the same name.
        namespace: Ray namespace of the actor; ``None`` is the caller's job namespace.
        lifetime: ``"detached"`` keeps it alive after the creating job ends.
        weights: Recall ranking, used only when this call creates the actor.
        dimension: Vector length, used only when this call creates the actor.
        start_timeout_s: How long to wait for the actor to answer.

    Returns:
        The actor handle; wrap it in ``RayMemory``.

    Raises:
        ConfigurationError: If the actor cannot start, does not answer in time, or already
            exists with a different store file.
    """
    path = str((data_dir / f"{name}.jsonl").resolve())
    handle = _RemoteMemoryActor.options(
        name=name,
        namespace=namespace,
        get_if_exists=True,
        lifetime=lifetime,
        num_cpus=0.1,
        max_restarts=-1,
        max_task_retries=_MAX_TASK_RETRIES,
        scheduling_strategy=NodeAffinitySchedulingStrategy(
            node_id=ray.get_runtime_context().get_node_id(), soft=False
        ),
    ).remote(path, weights, dimension)
    actual = _actor_data_path(handle, name, start_timeout_s)
    if actual != path:
        raise ConfigurationError(
            f"memory actor {name!r} already runs on {actual}, not {path}: "
            "use the same data directory everywhere or another actor name"
        )
    # Ray types a creation result as "handle or the class" so methods type-check; it is a handle.
    return cast(ActorHandle[MemoryActor], handle)


def _actor_data_path(handle: ActorProxy[MemoryActor], name: str, timeout_s: float) -> str:
    try:
        path = ray.get(handle.data_path.remote(), timeout=timeout_s)
    except GetTimeoutError as exc:
        raise ConfigurationError(
            f"memory actor {name!r} did not answer within {timeout_s:g} s: "
            "is 0.1 CPU free on this node?",
            retryable=True,
        ) from exc
    except RayActorError as exc:
        raise ConfigurationError(f"memory actor {name!r} could not start: {exc}") from exc
    return path


class RayMemory:
    """``EpisodicMemory`` backed by the shared memory actor.

    Picklable, so it can be handed to agent actors on any node (the embedder travels as its
    settings and loads its model or client in the process that uses it).

    Args:
        handle: From ``memory_actor``.
        embedder: Embeds episodes and query texts in the caller's process before they go to
            the actor; ``None`` keeps recall keyword-only unless callers pass vectors.
        lanes: Call the actor over its lane when it runs on the caller's node (~0.1 ms instead
            of a ~1 ms Ray call; see ``protocols.LaneServer``), through Ray otherwise.
    """

    def __init__(
        self,
        handle: ActorHandle[MemoryActor],
        *,
        embedder: Embedder | None = None,
        lanes: bool = True,
    ) -> None:
        # Ray's method typing (``@ray.method``) works through its "handle or class" alias.
        self._handle: ActorProxy[MemoryActor] = handle
        self._embedder = embedder
        self._lanes = lanes

    async def _call(self, method: str, *args: object) -> Any:
        if self._lanes:
            try:
                return await lane_call(self._handle, method, *args)
            except (LaneUnavailable, LaneBroken):
                pass  # through Ray, whose retries cover a restart (every call is idempotent)
            except LaneRemoteError as exc:
                raise exc.cause from None  # the store's own error (a bad vector), as through Ray
        return await _delivered(getattr(self._handle, method).remote(*args))

    async def remember(self, episodes: Sequence[Episode], *, vectors: Vectors | None = None) -> int:
        """See ``EpisodicMemory.remember``."""
        batch = list(episodes)
        if vectors is None:
            batch, vectors = await embed_episodes(self._embedder, batch)
        array = None if vectors is None else np.asarray(vectors, dtype=np.float32)
        return await self._call("remember", batch, array)

    async def recall(self, query: RecallQuery) -> list[ScoredEpisode]:
        """See ``EpisodicMemory.recall``."""
        query = await embed_query(self._embedder, query)
        return await self._call("recall", query)

    async def recall_many(self, queries: Sequence[RecallQuery]) -> list[list[ScoredEpisode]]:
        """See ``EpisodicMemory.recall_many``: one actor call for all of them."""
        embedded = await embed_queries(self._embedder, queries)
        return await self._call("recall_many", embedded)

    async def forget(self, where: MemoryFilter) -> int:
        """See ``EpisodicMemory.forget``."""
        return await self._call("forget", where)

    async def forget_expired(self, namespace: str = "default") -> int:
        """See ``EpisodicMemory.forget_expired``."""
        return await self._call("forget_expired", namespace)

    async def count(self, namespace: str = "default") -> int:
        """See ``EpisodicMemory.count``."""
        return await self._call("count", namespace)


async def _delivered(call: Awaitable[_T]) -> _T:
    # Transport failures become troupe's DeliveryError; errors raised by the store itself
    # (validation) pass through unchanged.
    try:
        return await call
    except ActorUnavailableError as exc:
        raise DeliveryError(f"memory actor unavailable: {exc}", retryable=True) from exc
    except RayActorError as exc:
        raise DeliveryError(f"memory actor died: {exc}", retryable=False) from exc
