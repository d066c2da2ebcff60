"""Settings for the model-serving app: one pydantic tree, loaded at the edge (CLI, Serve config)."""

from __future__ import annotations

import re
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DEFAULT_MODEL_NAME = "smollm2-135m"


class ModelSettings(BaseModel):
    """One served model: which engine loads it, from where, and how its replicas scale.

    Every replica of the model's deployment loads its own copy of the weights, so ``num_cpus``
    and ``n_threads`` are per replica.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        default=DEFAULT_MODEL_NAME,
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$",
        description="Model id clients send in the `model` field and see in `/v1/models`.",
    )
    engine: Literal["llama_cpp"] = Field(
        default="llama_cpp", description="Inference engine that runs the model."
    )
    path: str | None = Field(
        default=None,
        description="Path to the GGUF weights; None serves the bundled SmolLM2-135M-Instruct.",
    )
    n_ctx: int = Field(
        default=4096, ge=64, description="Context window in tokens (prompt plus completion)."
    )
    n_threads: int = Field(
        default=2,
        ge=1,
        description=(
            "CPU threads llama.cpp uses per replica. Threads meet at a spinning barrier every "
            "token: when other processes hold the cores, 2 threads on 2 cores fall to a tiny "
            "fraction of 1 thread's speed, so use fewer threads than free cores."
        ),
    )
    num_cpus: float = Field(
        default=1.0,
        ge=0,
        description="Logical CPUs Ray reserves per replica; fractional so small machines schedule.",
    )
    num_gpus: float = Field(default=0, ge=0, description="GPUs Ray reserves per replica.")
    max_ongoing_requests: int = Field(
        default=16,
        ge=1,
        description=(
            "Requests one replica accepts at once; llama.cpp runs them one by one, the rest wait "
            "in the replica. Serve's default of 5 makes bursts queue at the router instead."
        ),
    )
    min_replicas: int = Field(default=1, ge=0, description="Fewest replicas (autoscaling floor).")
    max_replicas: int = Field(
        default=1,
        ge=1,
        description="Most replicas; autoscaling is on only when this exceeds `min_replicas`.",
    )
    target_ongoing_requests: float = Field(
        default=2,
        gt=0,
        description="Ongoing requests per replica the autoscaler aims for.",
    )
    seed: int = Field(
        default=0, description="Sampler seed used when a request does not send its own `seed`."
    )

    @model_validator(mode="after")
    def _replicas_in_order(self) -> Self:
        if self.max_replicas < self.min_replicas:
            raise ValueError(
                f"max_replicas ({self.max_replicas}) must be >= min_replicas ({self.min_replicas})"
            )
        return self

    @property
    def autoscaling(self) -> bool:
        """Whether Serve should autoscale this model (``max_replicas > min_replicas``)."""
        return self.max_replicas > self.min_replicas

    @property
    def deployment_name(self) -> str:
        """Serve deployment name for this model: the model id with unsafe characters replaced."""
        return "model-" + re.sub(r"[^A-Za-z0-9_-]", "_", self.name)


def _default_models() -> list[ModelSettings]:
    return [ModelSettings()]


class ServeSettings(BaseModel):
    """The OpenAI-compatible model API: where it listens, which models it serves, who may call."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(default="127.0.0.1", description="Interface the Serve HTTP proxy binds.")
    port: int = Field(default=8000, ge=1, le=65535, description="Port of the Serve HTTP proxy.")
    app_name: str = Field(
        default="troupe-models", min_length=1, description="Serve application name."
    )
    route_prefix: str = Field(
        default="/",
        pattern=r"^/",
        description="URL prefix of the app; the OpenAI API lives under `<prefix>/v1`.",
    )
    ingress_num_cpus: float = Field(
        default=0.1,
        ge=0,
        description="Logical CPUs of the HTTP ingress replica; it only routes, so a fraction.",
    )
    ingress_max_ongoing_requests: int = Field(
        default=256,
        ge=1,
        description="Requests the ingress replica holds at once; it only awaits model replicas.",
    )
    models: list[ModelSettings] = Field(
        default_factory=_default_models,
        min_length=1,
        description="Models to serve, one Serve deployment each.",
    )
    api_keys: list[str] = Field(
        default_factory=list,
        description="Bearer tokens accepted on `/v1/*`; empty means no authentication.",
    )

    @field_validator("models")
    @classmethod
    def _unique_model_names(cls, models: list[ModelSettings]) -> list[ModelSettings]:
        for attribute in ("name", "deployment_name"):
            seen: set[str] = set()
            for model in models:
                value = getattr(model, attribute)
                if value in seen:
                    raise ValueError(f"two models share the {attribute} {value!r}")
                seen.add(value)
        return models

    @property
    def base_url(self) -> str:
        """Base URL of the OpenAI API, as a client on this machine should use it."""
        # A wildcard bind address is not something a client can connect to.
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        if ":" in host:
            host = f"[{host}]"
        prefix = self.route_prefix.rstrip("/")
        return f"http://{host}:{self.port}{prefix}/v1"
