"""Settings for the model-serving app: one pydantic tree, loaded at the edge (CLI, Serve config)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from protocols import ConfigurationError

DEFAULT_MODEL_NAME = "smollm2-135m"
DEFAULT_EMBEDDING_MODEL_NAME = "minilm-l6-v2"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$"


class _DeploymentSettings(BaseModel):
    """What every served model has, whatever its engine: its id, resources and scaling.

    Every replica of the model's deployment loads its own copy of the weights, so ``num_cpus``
    and thread counts are per replica.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        min_length=1,
        max_length=128,
        pattern=NAME_PATTERN,
        description="Model id clients send in the `model` field and see in `/v1/models`.",
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
            "Requests one replica accepts at once; the engine runs them one by one, the rest wait "
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
    upscale_delay_s: float = Field(
        default=30.0,
        ge=0,
        description=(
            "Seconds the load must stay above target before the autoscaler adds replicas "
            "(Serve's default)."
        ),
    )
    downscale_delay_s: float = Field(
        default=600.0,
        ge=0,
        description=(
            "Seconds the load must stay below target before the autoscaler removes replicas "
            "(Serve's default)."
        ),
    )
    fallbacks: list[str] = Field(
        default_factory=list,
        description=(
            "Other configured model names tried in order when this one fails (unreachable, "
            "5xx, timeout); request errors (4xx) are not retried elsewhere."
        ),
    )
    colocate: bool | None = Field(
        default=None,
        description=(
            "Run the engine inside the HTTP ingress replica instead of a deployment of its own: "
            "one replica hop less per request (3-8 ms on a busy 2-core machine). The ingress "
            "then reserves this model's CPUs and GPUs, its requests queue in the ingress "
            "(`ingress_max_ongoing_requests`), and an engine crash restarts the ingress. Needs "
            "one fixed replica. None decides: colocated for a CPU model with one fixed replica "
            "(the laptop default); its own deployment when it autoscales, has several replicas "
            "or uses GPUs."
        ),
    )

    @model_validator(mode="after")
    def _replicas_in_order(self) -> Self:
        if self.max_replicas < self.min_replicas:
            raise ValueError(
                f"max_replicas ({self.max_replicas}) must be >= min_replicas ({self.min_replicas})"
            )
        if self.name in self.fallbacks:
            raise ValueError(f"model {self.name!r} lists itself among its fallbacks")
        if self.colocate and (self.min_replicas, self.max_replicas) != (1, 1):
            raise ValueError(
                "colocate: true runs the model in the one ingress replica, so it needs "
                f"min_replicas = max_replicas = 1 (got {self.min_replicas} and "
                f"{self.max_replicas}); set colocate: false to scale it as its own deployment"
            )
        return self

    @property
    def autoscaling(self) -> bool:
        """Whether Serve should autoscale this model (``max_replicas > min_replicas``)."""
        return self.max_replicas > self.min_replicas

    @property
    def colocated(self) -> bool:
        """Whether the engine runs in the ingress replica (``colocate``, or its default)."""
        if self.colocate is not None:
            return self.colocate
        return (self.min_replicas, self.max_replicas) == (1, 1) and self.num_gpus == 0

    @property
    def deployment_name(self) -> str:
        """Serve deployment name for this model: the model id with unsafe characters replaced."""
        return "model-" + re.sub(r"[^A-Za-z0-9_-]", "_", self.name)


class LlamaCppSettings(_DeploymentSettings):
    """A chat model run by llama.cpp from a GGUF file (the bundled SmolLM2 by default)."""

    name: str = Field(
        default=DEFAULT_MODEL_NAME,
        min_length=1,
        max_length=128,
        pattern=NAME_PATTERN,
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
    seed: int = Field(
        default=0, description="Sampler seed used when a request does not send its own `seed`."
    )


class SentenceTransformersSettings(_DeploymentSettings):
    """An embeddings model run by sentence-transformers (bundled all-MiniLM-L6-v2 by default)."""

    name: str = Field(
        default=DEFAULT_EMBEDDING_MODEL_NAME,
        min_length=1,
        max_length=128,
        pattern=NAME_PATTERN,
        description="Model id clients send in the `model` field and see in `/v1/models`.",
    )
    engine: Literal["sentence_transformers"] = Field(
        default="sentence_transformers", description="Inference engine that runs the model."
    )
    path: str | None = Field(
        default=None,
        description="Directory of a sentence-transformers model; None serves the bundled MiniLM.",
    )
    device: str = Field(default="cpu", description="Torch device, e.g. `cpu` or `cuda`.")
    n_threads: int = Field(default=1, ge=1, description="Torch CPU threads per replica.")
    batch_size: int = Field(default=32, ge=1, description="Inputs encoded per forward pass.")
    max_inputs: int = Field(
        default=2048, ge=1, description="Most inputs one request may send (OpenAI allows 2048)."
    )


class PassthroughSettings(_DeploymentSettings):
    """A model served elsewhere, behind any OpenAI-compatible API, forwarded to as is.

    The key comes from ``api_key``, or from the environment variable ``api_key_env`` names; the
    variable is read once where the settings are loaded (``resolve_secrets``), never deeper.
    """

    engine: Literal["passthrough"] = Field(
        default="passthrough", description="Forward requests to `base_url`."
    )
    base_url: str = Field(
        pattern=r"^https?://", description="Base URL of the remote API, e.g. `https://host/v1`."
    )
    remote_model: str | None = Field(
        default=None, description="Model id to ask the remote API for; None sends `name`."
    )
    api_key: str | None = Field(default=None, description="Bearer key for the remote API.")
    api_key_env: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Name of an environment variable holding the key (read at the edge).",
    )
    timeout_s: float = Field(
        default=60, gt=0, description="Seconds to wait for the remote API before failing over."
    )
    num_cpus: float = Field(
        default=0.05,
        ge=0,
        description="Logical CPUs per replica; it only waits on the network, so a sliver.",
    )


class TransformersSettings(_DeploymentSettings):
    """A chat model run by Hugging Face ``transformers`` from a local model directory.

    The directory holds the weights, config and tokenizer (``save_pretrained`` output); nothing is
    downloaded. ``device: auto`` takes CUDA when the replica sees a GPU, which it does only when
    ``num_gpus`` reserves one (Ray then places the replica on a GPU node).
    """

    engine: Literal["transformers"] = Field(
        default="transformers", description="Inference engine that runs the model."
    )
    path: str = Field(
        min_length=1, description="Local directory of an HF causal-LM model and its tokenizer."
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto",
        description="Torch device: `auto` is CUDA when a GPU is visible to the replica, else CPU.",
    )
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        default="auto",
        description="Weight dtype: `auto` is float16 on CUDA and float32 on CPU.",
    )
    n_threads: int = Field(default=1, ge=1, description="Torch CPU threads per replica.")
    max_context: int | None = Field(
        default=None,
        ge=16,
        description="Context window in tokens; None takes the model's `max_position_embeddings`.",
    )
    seed: int = Field(
        default=0, description="Sampler seed used when a request does not send its own `seed`."
    )

    @model_validator(mode="after")
    def _cuda_needs_a_gpu(self) -> Self:
        if self.device == "cuda" and self.num_gpus <= 0:
            raise ValueError(
                "device 'cuda' needs num_gpus > 0, so Ray places the replica on a GPU node "
                "and lets it see the GPU"
            )
        return self


class VllmSettings(_DeploymentSettings):
    """A chat model run by vLLM on GPUs (vLLM must be installed where the replicas run).

    These settings validate without vLLM; deploying them without it is a ``ConfigurationError``.
    """

    engine: Literal["vllm"] = Field(default="vllm", description="Inference engine that runs it.")
    path: str = Field(
        min_length=1, description="Local directory of the model (weights, config, tokenizer)."
    )
    num_gpus: float = Field(
        default=1,
        gt=0,
        description="GPUs Ray reserves per replica; vLLM runs only on GPUs, so at least a share.",
    )
    tensor_parallel_size: int = Field(
        default=1, ge=1, description="GPUs one replica shards the model across."
    )
    max_model_len: int | None = Field(
        default=None, ge=16, description="Context window in tokens; None takes the model's."
    )
    gpu_memory_utilization: float = Field(
        default=0.9, gt=0, le=1, description="Share of GPU memory vLLM may take (weights + cache)."
    )
    dtype: Literal["auto", "float16", "bfloat16", "float32"] = Field(
        default="auto", description="Weight dtype."
    )
    seed: int = Field(default=0, description="Engine seed; a request's `seed` wins over it.")

    @model_validator(mode="after")
    def _gpus_cover_the_shards(self) -> Self:
        if self.num_gpus < self.tensor_parallel_size:
            raise ValueError(
                f"tensor_parallel_size {self.tensor_parallel_size} needs num_gpus >= "
                f"{self.tensor_parallel_size} (got {self.num_gpus})"
            )
        return self


def _engine_of(value: object) -> str:
    # A model entry without `engine` is llama.cpp, as before engines were a choice.
    if isinstance(value, dict):
        return str(value.get("engine", "llama_cpp"))
    return str(getattr(value, "engine", "llama_cpp"))


ModelSettings = Annotated[
    Annotated[LlamaCppSettings, Tag("llama_cpp")]
    | Annotated[SentenceTransformersSettings, Tag("sentence_transformers")]
    | Annotated[PassthroughSettings, Tag("passthrough")]
    | Annotated[TransformersSettings, Tag("transformers")]
    | Annotated[VllmSettings, Tag("vllm")],
    Discriminator(_engine_of),
]
"""Settings of one served model; ``engine`` decides which kind (llama.cpp when left out)."""


def _default_models() -> list[ModelSettings]:
    # Both fit a 2-core machine next to the agents: chat takes a core, embeddings a quarter.
    return [
        LlamaCppSettings(num_cpus=1.0),
        SentenceTransformersSettings(num_cpus=0.25),
    ]


def url_host(host: str, *, wildcard: str) -> str:
    """``host`` as a URL's host part; ``wildcard`` stands in for a bind-everything address,
    which is not something a client can connect to."""
    if host in ("0.0.0.0", "::", ""):
        host = wildcard
    return f"[{host}]" if ":" in host else host


class ServeSettings(BaseModel):
    """The OpenAI-compatible model API: where it listens, which models it serves, who may call."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(
        default="127.0.0.1",
        description="Interface the Serve HTTP proxy and the ingress's direct listener bind.",
    )
    port: int = Field(default=8000, ge=1, le=65535, description="Port of the Serve HTTP proxy.")
    direct_port: int | None = Field(
        default=0,
        ge=0,
        le=65535,
        description=(
            "Port on which the ingress replica serves the API itself, on `host`, skipping"
            " Serve's HTTP proxy (~7 ms less per request on 2 cores). 0: a free port, chosen"
            " when the app is deployed and kept across replica restarts; null: the Serve proxy"
            " on `port` only. The proxy serves the same API either way."
        ),
    )
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
    access_log: bool = Field(
        default=False,
        description=(
            "Serve's per-request access log lines in the proxy, the ingress and model replicas."
            " Off by default: each line is a file write on the request path (~0.7 ms a request"
            " on 2 cores); Serve's request metrics on the dashboard do not need it."
        ),
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
        names = {model.name for model in models}
        for model in models:
            unknown = [name for name in model.fallbacks if name not in names]
            if unknown:
                raise ValueError(
                    f"model {model.name!r} falls back to {', '.join(map(repr, unknown))}, "
                    f"which is not configured (models: {', '.join(sorted(names))})"
                )
        return models

    @model_validator(mode="after")
    def _distinct_ports(self) -> Self:
        if self.direct_port == self.port:
            raise ValueError(
                f"direct_port {self.direct_port} is the Serve proxy's port: pick another, 0 for"
                " any free one, or null for no direct listener"
            )
        return self

    def with_secrets(self, environ: Mapping[str, str]) -> ServeSettings:
        """A copy with each passthrough model's ``api_key_env`` read from ``environ``.

        Called at the edge (``deploy``, ``app_builder``), so nothing deeper reads the environment.

        Raises:
            ConfigurationError: A named variable is not set.
        """
        models: list[ModelSettings] = []
        for model in self.models:
            if isinstance(model, PassthroughSettings) and model.api_key_env and not model.api_key:
                key = environ.get(model.api_key_env)
                if not key:
                    raise ConfigurationError(
                        f"model {model.name!r} reads its API key from the environment variable "
                        f"{model.api_key_env}, which is not set"
                    )
                model = model.model_copy(update={"api_key": key})
            models.append(model)
        return self.model_copy(update={"models": models})

    def model(self, name: str) -> ModelSettings:
        """The configured model called ``name``.

        Raises:
            KeyError: No model has that name.
        """
        for model in self.models:
            if model.name == name:
                return model
        raise KeyError(name)

    @property
    def base_url(self) -> str:
        """Base URL of the OpenAI API through the Serve proxy, for a client on this machine.

        ``deploy`` returns the direct listener's URL instead when there is one.
        """
        host = url_host(self.host, wildcard="127.0.0.1")
        prefix = self.route_prefix.rstrip("/")
        return f"http://{host}:{self.port}{prefix}/v1"
