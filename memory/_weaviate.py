"""``EpisodicMemory`` on Weaviate (``weaviate-client`` v4).

One collection holds every episode with self-provided vectors (cosine); each namespace is a
tenant (multi-tenancy), so nothing crosses a namespace. Writes go in gRPC batches; recall
asks Weaviate for candidates (hybrid, BM25, near-vector or a filtered scan, all with the
filters applied server-side) and ranks them with recency and importance here.

Choosing Weaviate and not reaching it raises ``ConfigurationError``: never a silent fallback
to the embedded store.

Retries: none here. The client's own calls are not retried by this layer; a failed call
raises ``DeliveryError`` (retryable) and the caller (bus / coordinator) decides.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlparse

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from memory._embedding import Embedder, embed_episodes, embed_queries, embed_query, normalise
from memory._episode import Episode, MemoryFilter, RecallQuery, ScoredEpisode, utc_now
from memory._protocol import RecallWeights, Vectors
from memory._scoring import rank
from protocols import ConfigurationError, DeliveryError

_TENANT_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_NEVER = 0.0  # expires_at stored for "never expires"


class WeaviateSettings(BaseModel):
    """Where Weaviate is and how episodes are stored there."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str = Field(
        default="http://localhost:8080",
        description="REST URL: local, custom host, or a Weaviate Cloud cluster URL.",
    )
    grpc_port: int = Field(
        default=50051, ge=1, le=65535, description="gRPC port on the same host (not for cloud)."
    )
    api_key: str | None = Field(default=None, description="API key (required for cloud).")
    cloud: bool = Field(
        default=False, description="Connect as Weaviate Cloud (gRPC via the cloud's own host)."
    )
    collection: str = Field(
        default="TroupeEpisode",
        pattern=r"^[A-Z][A-Za-z0-9_]*$",
        description="Collection name (Weaviate needs a capital first letter).",
    )
    dimension: int = Field(default=384, ge=1, description="Vector length of every episode.")
    candidates: int = Field(
        default=50, ge=1, le=10_000, description="Candidates fetched per recall before ranking."
    )
    timeout_s: float = Field(default=10.0, gt=0, description="Connect and call timeout.")


def _connect(settings: WeaviateSettings) -> Any:
    import weaviate
    from weaviate.classes.init import AdditionalConfig, Auth, Timeout

    auth = None if settings.api_key is None else Auth.api_key(settings.api_key)
    extra = AdditionalConfig(
        timeout=Timeout(
            init=settings.timeout_s, query=settings.timeout_s, insert=settings.timeout_s
        )
    )
    if settings.cloud:
        if auth is None:
            raise ConfigurationError("Weaviate Cloud needs an api_key")
        return weaviate.connect_to_weaviate_cloud(
            cluster_url=settings.url, auth_credentials=auth, additional_config=extra
        )
    parsed = urlparse(settings.url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConfigurationError(
            f"Weaviate url must be http(s)://host[:port], got {settings.url!r}"
        )
    secure = parsed.scheme == "https"
    return weaviate.connect_to_custom(
        http_host=parsed.hostname,
        http_port=parsed.port or (443 if secure else 80),
        http_secure=secure,
        grpc_host=parsed.hostname,
        grpc_port=settings.grpc_port,
        grpc_secure=secure,
        auth_credentials=auth,
        additional_config=extra,
    )


class WeaviateMemory:
    """``EpisodicMemory`` on a Weaviate server.

    Connects on construction (and creates the collection if missing). Recall components:
    with text and vector the fused hybrid score (relative score fusion, ``hybrid_alpha``) is
    the relevance; with a vector only, ``1 - cosine distance``; with text only, BM25 divided
    by the best candidate's. ``last_accessed`` is not tracked on this backend.

    Args:
        settings: Where and how.
        weights: How recall ranks.
        embedder: Embeds episodes and query texts that come without vectors.
        clock: "Now" for recency and expiry.

    Raises:
        ConfigurationError: If Weaviate cannot be reached or refuses the setup.
    """

    def __init__(
        self,
        settings: WeaviateSettings,
        *,
        weights: RecallWeights | None = None,
        embedder: Embedder | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._settings = settings
        self._weights = weights or RecallWeights()
        self._embedder = embedder
        self._clock = clock
        self._lock = threading.Lock()
        self._tenants: set[str] = set()
        try:
            self._client = _connect(settings)
        except ConfigurationError:
            raise
        except Exception as exc:  # the client raises many types; all mean "not reachable"
            raise ConfigurationError(
                f"Weaviate was chosen but is not reachable at {settings.url} "
                f"(gRPC port {settings.grpc_port}): {exc}"
            ) from exc
        try:
            self._collection = self._ensure_collection()
        except Exception as exc:
            self._client.close()
            raise ConfigurationError(
                f"Weaviate at {settings.url} refused collection {settings.collection!r}: {exc}"
            ) from exc

    def close(self) -> None:
        """Closes the client's connections."""
        self._client.close()

    async def remember(self, episodes: Sequence[Episode], *, vectors: Vectors | None = None) -> int:
        """See ``EpisodicMemory.remember``."""
        batch = list(episodes)
        if vectors is None:
            batch, vectors = await embed_episodes(self._embedder, batch)
        units = self._check_vectors(vectors, len(batch))
        return await asyncio.to_thread(self._remember, batch, units)

    async def recall(self, query: RecallQuery) -> list[ScoredEpisode]:
        """See ``EpisodicMemory.recall``."""
        query = await embed_query(self._embedder, query)
        if query.vector is not None and len(query.vector) != self._settings.dimension:
            raise ValueError(
                f"query vector has dimension {len(query.vector)}, the store holds "
                f"{self._settings.dimension}-d vectors: embed the query with the same model"
            )
        return await asyncio.to_thread(self._recall, query)

    async def recall_many(self, queries: Sequence[RecallQuery]) -> list[list[ScoredEpisode]]:
        """See ``EpisodicMemory.recall_many`` (one search per query, concurrently)."""
        embedded = await embed_queries(self._embedder, queries)
        return list(await asyncio.gather(*(self.recall(q) for q in embedded)))

    async def forget(self, where: MemoryFilter) -> int:
        """See ``EpisodicMemory.forget``."""
        return await asyncio.to_thread(self._delete, where.namespace, self._filter(where, None))

    async def forget_expired(self, namespace: str = "default") -> int:
        """See ``EpisodicMemory.forget_expired``."""
        from weaviate.classes.query import Filter

        now = self._clock().timestamp()
        expired = Filter.by_property("expires_at").greater_than(_NEVER) & Filter.by_property(
            "expires_at"
        ).less_or_equal(now)
        return await asyncio.to_thread(self._delete, namespace, expired)

    async def count(self, namespace: str = "default") -> int:
        """See ``EpisodicMemory.count``."""
        return await asyncio.to_thread(self._count, namespace)

    # --- blocking parts, run in a worker thread -------------------------------------------

    def _ensure_collection(self) -> Any:
        from weaviate.classes.config import (
            Configure,
            DataType,
            Property,
            Tokenization,
            VectorDistances,
        )

        name = self._settings.collection
        if not self._client.collections.exists(name):

            def exact(prop: str, kind: DataType = DataType.TEXT) -> Property:
                return Property(name=prop, data_type=kind, tokenization=Tokenization.FIELD)

            self._client.collections.create(
                name,
                vector_config=Configure.Vectors.self_provided(
                    vector_index_config=Configure.VectorIndex.hnsw(
                        distance_metric=VectorDistances.COSINE
                    )
                ),
                multi_tenancy_config=Configure.multi_tenancy(enabled=True),
                properties=[
                    Property(name="content", data_type=DataType.TEXT),
                    Property(
                        name="episode",
                        data_type=DataType.TEXT,
                        index_filterable=False,
                        index_searchable=False,
                    ),
                    exact("kind"),
                    exact("agent"),
                    exact("task_id"),
                    exact("tags", DataType.TEXT_ARRAY),
                    Property(name="created_at", data_type=DataType.NUMBER),
                    Property(name="expires_at", data_type=DataType.NUMBER),
                    Property(name="importance", data_type=DataType.NUMBER),
                ],
            )
        return self._client.collections.get(name)

    def _tenant(self, namespace: str, *, create: bool) -> Any | None:
        if not _TENANT_NAME.match(namespace):
            raise ValueError(
                f"namespace {namespace!r} cannot be a Weaviate tenant: use 1-64 letters, "
                "digits, '-' or '_'"
            )
        with self._lock:
            if namespace not in self._tenants:
                found = self._call(lambda: self._collection.tenants.get_by_names([namespace]))
                if namespace not in found:
                    if not create:
                        return None
                    from weaviate.classes.tenants import Tenant

                    self._call(lambda: self._collection.tenants.create([Tenant(name=namespace)]))
                self._tenants.add(namespace)
        return self._collection.with_tenant(namespace)

    def _remember(self, episodes: list[Episode], vectors: np.ndarray | None) -> int:
        by_namespace: dict[str, list[int]] = {}
        for i, episode in enumerate(episodes):
            by_namespace.setdefault(episode.namespace, []).append(i)
        return sum(
            self._remember_in(namespace, [episodes[i] for i in indices], vectors, indices)
            for namespace, indices in by_namespace.items()
        )

    def _remember_in(
        self,
        namespace: str,
        episodes: list[Episode],
        vectors: np.ndarray | None,
        rows: list[int],
    ) -> int:
        from weaviate.classes.data import DataObject
        from weaviate.classes.query import Filter

        tenant = self._tenant(namespace, create=True)
        assert tenant is not None
        latest = {episode.id: (episode, row) for episode, row in zip(episodes, rows, strict=True)}
        ids = list(latest)  # the last episode with an id wins
        existing = self._call(
            lambda: tenant.query.fetch_objects(
                filters=Filter.by_id().contains_any(ids), limit=len(ids), return_properties=[]
            )
        )
        objects = [
            DataObject(
                uuid=episode.id,
                properties=_properties(episode),
                vector=None if vectors is None else vectors[row].tolist(),
            )
            for episode, row in latest.values()
        ]
        result = self._call(lambda: tenant.data.insert_many(objects))
        if result.has_errors:
            first = next(iter(result.errors.values()))
            raise DeliveryError(f"Weaviate refused {len(result.errors)} episodes: {first}")
        return len(ids) - len(existing.objects)

    def _recall(self, query: RecallQuery) -> list[ScoredEpisode]:
        from weaviate.classes.query import HybridFusion, MetadataQuery, Sort

        tenant = self._tenant(query.namespace, create=False)
        if tenant is None:
            return []
        now = self._clock()
        filters = self._filter(query, now)
        limit = max(self._settings.candidates, 4 * query.k)
        text = query.text if query.text.strip() else None
        vector = None if query.vector is None else normalise(np.asarray(query.vector)).tolist()
        q = tenant.query
        if text is not None and vector is not None:
            alpha = self._weights.hybrid_alpha
            found = self._call(
                lambda: q.hybrid(
                    query=text,
                    vector=vector,
                    alpha=alpha,
                    fusion_type=HybridFusion.RELATIVE_SCORE,
                    query_properties=["content"],
                    filters=filters,
                    limit=limit,
                    return_metadata=MetadataQuery(score=True),
                )
            )
            rows = [(o, o.metadata.score or 0.0, 0.0, 0.0) for o in found.objects]
        elif vector is not None:
            found = self._call(
                lambda: q.near_vector(
                    near_vector=vector,
                    filters=filters,
                    limit=limit,
                    return_metadata=MetadataQuery(distance=True),
                )
            )
            sims = [_similarity(o.metadata.distance) for o in found.objects]
            rows = [(o, s, 0.0, s) for o, s in zip(found.objects, sims, strict=True)]
        elif text is not None:
            found = self._call(
                lambda: q.bm25(
                    query=text,
                    query_properties=["content"],
                    filters=filters,
                    limit=limit,
                    return_metadata=MetadataQuery(score=True),
                )
            )
            best = max((o.metadata.score or 0.0 for o in found.objects), default=0.0)
            norm = [(o.metadata.score or 0.0) / best if best > 0 else 0.0 for o in found.objects]
            rows = [(o, s, s, 0.0) for o, s in zip(found.objects, norm, strict=True)]
        else:
            found = self._call(
                lambda: q.fetch_objects(
                    filters=filters,
                    limit=limit,
                    sort=Sort.by_property("created_at", ascending=False),
                )
            )
            rows = [(o, 0.0, 0.0, 0.0) for o in found.objects]
        candidates = [
            (Episode.model_validate_json(o.properties["episode"]), r, kw, sim)
            for o, r, kw, sim in rows
        ]
        return rank(candidates, weights=self._weights, now=now, k=query.k)

    def _delete(self, namespace: str, filters: Any) -> int:
        tenant = self._tenant(namespace, create=False)
        if tenant is None:
            return 0
        result = self._call(lambda: tenant.data.delete_many(where=filters))
        return int(result.successful)

    def _count(self, namespace: str) -> int:
        tenant = self._tenant(namespace, create=False)
        if tenant is None:
            return 0
        result = self._call(lambda: tenant.aggregate.over_all(total_count=True))
        return int(result.total_count or 0)

    def _filter(self, where: MemoryFilter, now: datetime | None) -> Any:
        from weaviate.classes.query import Filter

        # Always one condition, so "forget everything in the namespace" is a valid filter.
        parts = [Filter.by_property("importance").greater_or_equal(0.0)]
        if now is not None:
            parts.append(
                Filter.by_property("expires_at").equal(_NEVER)
                | Filter.by_property("expires_at").greater_than(now.timestamp())
            )
        if where.kinds is not None:
            parts.append(Filter.by_property("kind").contains_any(list(where.kinds)))
        if where.agent is not None:
            parts.append(Filter.by_property("agent").equal(where.agent))
        if where.task_id is not None:
            parts.append(Filter.by_property("task_id").equal(where.task_id))
        if where.tags:
            parts.append(Filter.by_property("tags").contains_all(list(where.tags)))
        if where.since is not None:
            parts.append(Filter.by_property("created_at").greater_or_equal(where.since.timestamp()))
        if where.until is not None:
            parts.append(Filter.by_property("created_at").less_than(where.until.timestamp()))
        if where.ids is not None:
            if not where.ids:
                parts.append(Filter.by_property("importance").less_than(0.0))  # matches none
            else:
                parts.append(Filter.by_id().contains_any(list(where.ids)))
        return Filter.all_of(parts)

    def _check_vectors(self, vectors: Vectors | None, count: int) -> np.ndarray | None:
        if vectors is None:
            return None
        dimension = self._settings.dimension
        matrix = np.asarray(vectors, dtype=np.float32)
        if matrix.ndim != 2 or matrix.shape != (count, dimension):
            raise ValueError(
                f"vectors must have shape ({count}, {dimension}) (one {dimension}-d "
                f"vector per episode), got {matrix.shape}"
            )
        if not np.isfinite(matrix).all():
            raise ValueError("vectors must be finite (no NaN or infinity)")
        return normalise(matrix)

    def _call(self, call: Callable[[], Any]) -> Any:
        from weaviate.exceptions import WeaviateBaseError

        try:
            return call()
        except WeaviateBaseError as exc:
            raise DeliveryError(f"Weaviate call failed: {exc}", retryable=True) from exc


def _properties(episode: Episode) -> dict[str, Any]:
    return {
        "content": episode.content,
        "episode": episode.model_dump_json(),
        "kind": episode.kind,
        "agent": episode.agent,
        "task_id": episode.task_id or "",
        "tags": list(episode.tags),
        "created_at": episode.created_at.timestamp(),
        "expires_at": _NEVER if episode.expires_at is None else episode.expires_at.timestamp(),
        "importance": episode.importance,
    }


def _similarity(cosine_distance: float | None) -> float:
    # Weaviate's cosine distance is 1 - cosine; a missing distance counts as unrelated.
    return 0.0 if cosine_distance is None else max(0.0, 1.0 - cosine_distance)
