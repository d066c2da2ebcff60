"""Ray Serve wiring: a FastAPI ingress deployment, hosting some engines, routing to the rest.

```
HTTP ─▶ proxy ─▶ OpenAIIngress (FastAPI) ─┬─ colocated engines (in the ingress replica)
                                          └─handle─▶ model-<name> (engine) x N
```

The ingress validates, authenticates and routes. A model with one fixed replica on CPU (the
laptop default) runs in the ingress replica itself (``colocate``), which saves a replica hop per
request; a model that autoscales, spreads over nodes or uses GPUs gets a deployment of its own
with its own resources and scaling. Errors come back from model replicas as ``APIErrorReport``
values, so a 400 raised in a replica is still a 400 at the edge.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any

import ray
from fastapi import FastAPI
from ray import serve
from ray.exceptions import RayActorError, RayTaskError
from ray.serve.exceptions import (
    BackPressureError,
    DeploymentUnavailableError,
    ReplicaUnavailableError,
)
from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator

from serve._api import ModelBackend, create_app
from serve._colocated import ColocatedBackend, ReportingMethods, RoutingBackend
from serve._direct import DirectAddress, DirectListener, RequestObserver, free_port
from serve._embedding_types import EmbeddingRequest, EmbeddingResponse
from serve._engine import Engine, create_engine
from serve._errors import APIError, APIErrorReport, EngineFailedError, ModelUnavailableError
from serve._fallback import FallbackBackend
from serve._settings import (
    ModelSettings,
    SentenceTransformersSettings,
    ServeSettings,
    TransformersSettings,
    VllmSettings,
)
from serve._types import ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse
from serve._vllm import require_vllm

logger = logging.getLogger(__name__)

INGRESS_DEPLOYMENT = "openai-ingress"
# Serve health-checks every replica on its own; this only bounds `GET /health` on the ingress.
HEALTH_TIMEOUT_S = 10.0
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
# Replica process settings that cut per-request latency. By default a Serve replica hands every
# request from its own event loop to a second loop thread that runs user code, and handles route
# on a third; each hand-off is a cross-thread wake-up, paid on the ingress and on the model replica.
# Our deployments never block their event loop while serving (engines run blocking work in
# threads, sync methods run in Serve's thread pool), so they run on the replica's loop; only the
# constructor (the model load) holds it, before the replica takes requests. Measured with
# bench/serve.py-style A/B runs: about 0.5-1 ms less per request of the ~15 ms the Serve path
# costs on a 2-core machine (issue 4).
REPLICA_ENV = {
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
}
# Failures that mean "no replica could take the request now", as opposed to a bug in one.
_UNAVAILABLE = (
    BackPressureError,
    DeploymentUnavailableError,
    ReplicaUnavailableError,
    RayActorError,
)


class ModelDeployment(ReportingMethods):
    """A Serve deployment that owns one engine (``build_app`` turns it into one per model).

    ``chat``, ``embed`` and ``chat_stream`` (from ``ReportingMethods``) answer handle calls.

    Args:
        settings: The model to load; options such as replicas come from ``build_app``.
    """

    def __init__(self, settings: ModelSettings) -> None:
        self._engine: Engine = create_engine(settings)
        self._serving = self._engine

    def health(self) -> APIErrorReport | None:
        """None when the engine can serve, else why not (for the ingress's ``GET /health``)."""
        try:
            self._engine.check_health()
        except APIError as error:
            return error.to_report()
        return None

    def check_health(self) -> None:
        """Serve's periodic health check: a raise makes Serve replace this replica."""
        self._engine.check_health()


class HandleBackend:
    """A ``ModelBackend`` that forwards to model deployments through Serve handles.

    Args:
        handles: Deployment handle of each model, by model id.
    """

    def __init__(self, handles: Mapping[str, DeploymentHandle]) -> None:
        self._handles = dict(handles)

    def model_ids(self) -> Sequence[str]:
        """Ids of the served models."""
        return list(self._handles)

    async def chat(self, request: ChatCompletionRequest) -> ChatCompletionResponse:
        """Runs the request on the model's deployment."""
        with _replica_errors(request.model):
            outcome = await self._handles[request.model].chat.remote(request)
        if isinstance(outcome, APIErrorReport):
            raise APIError.from_report(outcome)
        assert isinstance(outcome, ChatCompletionResponse)
        return outcome

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        """Embeds on the model's deployment."""
        with _replica_errors(request.model):
            outcome = await self._handles[request.model].embed.remote(request)
        if isinstance(outcome, APIErrorReport):
            raise APIError.from_report(outcome)
        assert isinstance(outcome, EmbeddingResponse)
        return outcome

    async def chat_stream(
        self, request: ChatCompletionRequest
    ) -> AsyncIterator[ChatCompletionChunk]:
        """Streams the request from the model's deployment."""
        handle = self._handles[request.model].options(stream=True)
        with _replica_errors(request.model):
            responses = handle.chat_stream.remote(request)
            assert isinstance(responses, DeploymentResponseGenerator)  # stream=True gives one
            async for item in responses:
                if isinstance(item, APIErrorReport):
                    raise APIError.from_report(item)
                assert isinstance(item, ChatCompletionChunk)
                yield item

    async def check_health(self) -> None:
        """Asks every model deployment for its health."""
        calls = [handle.health.remote() for handle in self._handles.values()]
        try:
            reports = await asyncio.wait_for(asyncio.gather(*calls), timeout=HEALTH_TIMEOUT_S)
        except Exception as error:  # timeout, no replica, replica crashed: all mean unhealthy
            raise ModelUnavailableError(f"a model is unhealthy: {type(error).__name__}") from error
        for report in reports:
            if report is not None:
                raise APIError.from_report(report)


@contextlib.contextmanager
def _replica_errors(model: str) -> Iterator[None]:
    """Turns Ray failures of a model call into API errors with a short, useful message."""
    try:
        yield
    except _UNAVAILABLE as error:
        raise ModelUnavailableError(
            f"model {model!r} is unavailable, retry later: {type(error).__name__}"
        ) from error
    except RayTaskError as error:  # a bug in the replica: say what, without its traceback
        cause = error.cause
        raise EngineFailedError(
            f"model {model!r} failed: {type(cause).__name__}: {cause}"
        ) from error


@serve.ingress()
class OpenAIIngress(ReportingMethods):
    """The HTTP ingress: the OpenAI-compatible FastAPI app over colocated engines and handles.

    Besides HTTP it answers handle calls (``chat``, ``embed``, ``chat_stream``, ``health``) the
    way a model deployment does, so ``HandleClient`` reaches colocated models through it.

    Args:
        models: Every configured model, in configuration order; the colocated ones load here.
        handles: Deployment handle of each model that is not colocated, by model id.
        api_keys: Bearer tokens accepted on ``/v1/*``; empty means no authentication.
    """

    def __init__(
        self,
        models: Sequence[ModelSettings],
        handles: Mapping[str, DeploymentHandle],
        api_keys: Sequence[str],
        direct: DirectAddress | None = None,
    ) -> None:
        self._local = ColocatedBackend(
            [create_engine(model) for model in models if model.name not in handles]
        )
        remote = HandleBackend(handles)
        routes: dict[str, ModelBackend] = {
            model.name: remote if model.name in handles else self._local for model in models
        }
        self._serving = RoutingBackend(routes)
        fallbacks = {model.name: model.fallbacks for model in models}
        self._backend = FallbackBackend(self._serving, fallbacks)
        self._app = create_app(self._backend, api_keys=api_keys)
        # Serve constructs the ingress on the replica's event loop, where the listener serves.
        self._direct: DirectListener | None = None
        self._direct_url: str | None = None
        self._node_id = ray.get_runtime_context().get_node_id()
        if direct is not None:
            self._direct = DirectListener(
                self._app,
                host=direct.host,
                port=direct.port,
                route_prefix=direct.route_prefix,
                observe=_direct_request_metrics(serve.get_replica_context().app_name),
            )
            self._direct_url = self._direct.url(ray.util.get_node_ip_address())
            logging.getLogger("ray.serve").info(
                "troupe models: direct listener at %s", self._direct_url
            )

    def direct_endpoint(self) -> tuple[str, str] | None:
        """The OpenAI base URL of this replica's direct listener and the id of its node; None
        when it has no listener."""
        return None if self._direct_url is None else (self._direct_url, self._node_id)

    async def __del__(self) -> None:
        # Serve awaits this when it stops the replica: requests in flight finish first.
        if self._direct is not None:
            await self._direct.close()

    async def health(self) -> APIErrorReport | None:
        """None when the colocated engines can serve, else why not (``HandleClient`` asks)."""
        try:
            await self._local.check_health()
        except APIError as error:
            return error.to_report()
        return None

    async def check_health(self) -> None:
        """Serve's periodic health check: a broken engine or a dead direct listener fails it."""
        await self._local.check_health()
        if self._direct is not None and not self._direct.serving:
            raise ModelUnavailableError("the direct HTTP listener stopped")

    def __serve_build_asgi_app__(self) -> FastAPI:
        # Serve calls this after __init__: the proxy's requests reach the same app as direct ones.
        return self._app


def _direct_request_metrics(app_name: str) -> RequestObserver:
    """Ray metrics of the direct listener's requests, for the dashboard (Serve's own
    ``serve_num_http_requests`` and latency metrics count only the proxy's requests)."""
    from ray.util.metrics import Counter, Histogram

    requests = Counter(
        "troupe_direct_http_requests",
        description="Requests answered by the ingress replica's direct HTTP listener.",
        tag_keys=("application", "route", "method", "status_code"),
    )
    latency = Histogram(
        "troupe_direct_http_request_latency_ms",
        description="Latency of the direct HTTP listener's requests, in milliseconds.",
        boundaries=[1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000, 60000],
        tag_keys=("application", "route"),
    )

    def observe(route: str, method: str, status: int, seconds: float) -> None:
        requests.inc(
            tags={
                "application": app_name,
                "route": route,
                "method": method,
                "status_code": str(status),
            }
        )
        latency.observe(seconds * 1000, tags={"application": app_name, "route": route})

    return observe


def build_app(settings: ServeSettings) -> serve.Application:
    """The Serve application for ``settings``: an ingress plus one deployment per model.

    Args:
        settings: Models, resources and API keys.

    Returns:
        An application to pass to ``serve.run`` (see ``deploy``).

    Raises:
        ConfigurationError: A model's engine cannot run (vLLM chosen but not installed).
    """
    for model in settings.models:
        if isinstance(model, VllmSettings):
            require_vllm(model)
    handles = {
        model.name: _model_app(model, access_log=settings.access_log)
        for model in settings.models
        if not model.colocated
    }
    ingress = serve.deployment(**ingress_deployment_options(settings))(OpenAIIngress)
    direct = None
    if settings.direct_port is not None:
        # Port 0 is resolved here, not in the replica, so a restarted replica (Serve keeps these
        # arguments) listens where clients already point.
        port = settings.direct_port or free_port(settings.host)
        direct = DirectAddress(settings.host, port, settings.route_prefix)
    return ingress.bind(settings.models, handles, settings.api_keys, direct)


def _model_app(model: ModelSettings, *, access_log: bool) -> serve.Application:
    options = model_deployment_options(model, access_log=access_log)
    return serve.deployment(**options)(ModelDeployment).bind(model)


def ingress_deployment_options(settings: ServeSettings) -> dict[str, Any]:
    """Serve deployment options of the ingress: its own share plus its colocated models'."""
    colocated = [model for model in settings.models if model.colocated]
    env_vars = dict(REPLICA_ENV)
    if any(_loads_hub_weights(model) for model in colocated):
        env_vars.update(OFFLINE_ENV)
    return {
        "name": INGRESS_DEPLOYMENT,
        "num_replicas": 1,
        "ray_actor_options": {
            "num_cpus": settings.ingress_num_cpus + sum(model.num_cpus for model in colocated),
            "num_gpus": sum(model.num_gpus for model in colocated),
            "runtime_env": {"env_vars": env_vars},
        },
        "max_ongoing_requests": settings.ingress_max_ongoing_requests,
        "logging_config": _logging_config(settings.access_log),
    }


def _loads_hub_weights(model: ModelSettings) -> bool:
    return isinstance(model, SentenceTransformersSettings | TransformersSettings | VllmSettings)


def _logging_config(access_log: bool) -> dict[str, Any]:
    return {"enable_access_log": access_log}


def model_deployment_options(model: ModelSettings, *, access_log: bool = False) -> dict[str, Any]:
    """Serve deployment options for ``model``: resources, concurrency, replicas or autoscaling.

    ``access_log`` turns on Serve's per-request log lines in the model's replicas
    (``ServeSettings.access_log``).
    """
    env_vars = dict(REPLICA_ENV)
    if _loads_hub_weights(model):
        # Weights come from a local directory; a hub lookup would hang on an offline machine.
        env_vars.update(OFFLINE_ENV)
    actor_options: dict[str, Any] = {
        "num_cpus": model.num_cpus,
        "num_gpus": model.num_gpus,
        "runtime_env": {"env_vars": env_vars},
    }
    options: dict[str, Any] = {
        "name": model.deployment_name,
        "ray_actor_options": actor_options,
        "max_ongoing_requests": model.max_ongoing_requests,
        "logging_config": _logging_config(access_log),
    }
    if model.autoscaling:
        options["autoscaling_config"] = {
            "min_replicas": model.min_replicas,
            "max_replicas": model.max_replicas,
            "target_ongoing_requests": model.target_ongoing_requests,
            "upscale_delay_s": model.upscale_delay_s,
            "downscale_delay_s": model.downscale_delay_s,
        }
    else:
        options["num_replicas"] = model.max_replicas
    return options


def app_builder(args: dict[str, Any]) -> serve.Application:
    """Builder for ``serve run serve/config.yaml``: ``args`` are ``ServeSettings`` fields.

    ``port`` in ``args`` is ignored there: the config file's ``http_options`` decide where the
    proxy listens. ``host`` and ``direct_port`` place the ingress replica's direct listener;
    the replica logs its URL ("troupe models: direct listener at ...").
    """
    return build_app(ServeSettings.model_validate(args).with_secrets(os.environ))


def deploy(settings: ServeSettings) -> str:
    """Starts Serve (if needed) and runs the app; returns the OpenAI base URL.

    Connects to the Ray that is already initialised in this process, or starts one.
    ``serve.start`` keeps the HTTP options and the proxies' logging (``access_log``) of a Serve
    instance that is already running; the app's replicas follow ``settings.access_log`` either
    way.
    API keys of passthrough models named by ``api_key_env`` are read from the environment here.

    Args:
        settings: What to serve and where.

    Returns:
        The base URL for an OpenAI client: the ingress replica's direct listener
        (``ServeSettings.direct_port``), or the Serve proxy's (``proxy_url``, e.g.
        ``http://127.0.0.1:8000/v1``) when ``direct_port`` is null. The proxy serves the same
        API in both cases.

    Raises:
        RuntimeError: Serve could not start a replica (the message says why; a direct port in
            use is one reason).
    """
    app = build_app(settings.with_secrets(os.environ))
    serve.start(
        http_options={"host": settings.host, "port": settings.port},
        logging_config=_logging_config(settings.access_log),
    )
    try:
        ingress = serve.run(app, name=settings.app_name, route_prefix=settings.route_prefix)
    except RuntimeError as error:  # Serve's message names the deployment, not the reason
        raise RuntimeError(f"{error} {_failure_reasons(settings.app_name)}".strip()) from error
    endpoint = ingress.direct_endpoint.remote().result()
    return client_url(
        endpoint,
        direct_host=settings.host,
        proxy=proxy_url(settings),
        here=ray.get_runtime_context().get_node_id(),
    )


def proxy_url(settings: ServeSettings) -> str:
    """The app's OpenAI base URL through the running Serve instance's HTTP proxy.

    ``serve.start`` keeps the HTTP options of a Serve instance that already runs, so its host and
    port win over ``settings.host`` and ``settings.port``; with no Serve running, or if Serve's
    client does not say, this is ``settings.base_url``.
    """
    from ray.serve.context import _get_global_client

    try:
        client = _get_global_client(raise_if_no_controller_running=False)
        if client is None:
            return settings.base_url
        host, port = str(client.http_config.host), int(client.http_config.port)
    except Exception:  # a private client API: if it changes, the settings still say
        return settings.base_url
    return settings.model_copy(update={"host": host, "port": port}).base_url


def _failure_reasons(app_name: str) -> str:
    """The last line of each failed deployment's error (its exception), for a deploy error."""
    application = serve.status().applications.get(app_name)
    if application is None:
        return ""
    reasons = []
    for name, deployment in application.deployments.items():
        lines = [line for line in deployment.message.splitlines() if line.strip()]
        if deployment.status in ("DEPLOY_FAILED", "UNHEALTHY") and lines:
            reasons.append(f"{name}: {lines[-1].strip()}")
    return "; ".join(reasons)


def client_url(endpoint: tuple[str, str] | None, *, direct_host: str, proxy: str, here: str) -> str:
    """The URL a client on node ``here`` should use: the direct listener's when it can reach it.

    Args:
        endpoint: The direct listener's URL and node id, or None when there is none.
        direct_host: The address the direct listener binds.
        proxy: The app's URL through the Serve proxy.
        here: The caller's node id.
    """
    if endpoint is None:
        return proxy
    url, node_id = endpoint
    if node_id != here and _is_loopback(direct_host):
        logger.warning(
            "the ingress replica runs on another node and its direct listener binds %s, which "
            "this node cannot reach: using the Serve proxy (set serve.host to 0.0.0.0 for the "
            "direct one)",
            direct_host,
        )
        return proxy
    return url


def _is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


def shutdown(settings: ServeSettings) -> None:
    """Deletes this app only; Serve and other apps on the cluster keep running."""
    serve.delete(settings.app_name)
