"""Settings validation, the Serve config file, and the public API of `serve`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import TypeAdapter, ValidationError

import serve
from serve import (
    LlamaCppSettings,
    ModelSettings,
    PassthroughSettings,
    SentenceTransformersSettings,
    ServeSettings,
    TransformersSettings,
    VllmSettings,
)

MODEL: TypeAdapter[Any] = TypeAdapter(ModelSettings)

CONFIG = Path(serve.__file__).parent / "config.yaml"


def test_public_api_is_pinned() -> None:
    assert sorted(serve.__all__) == [
        "APIError",
        "APIErrorReport",
        "AssistantMessage",
        "AuthenticationError",
        "ChatCompletionChoice",
        "ChatCompletionChunk",
        "ChatCompletionRequest",
        "ChatCompletionResponse",
        "ChatMessage",
        "ChunkChoice",
        "ChunkDelta",
        "ChunkStream",
        "CompletionUsage",
        "ContextLengthExceededError",
        "Embedding",
        "EmbeddingRequest",
        "EmbeddingResponse",
        "EmbeddingUsage",
        "EncodingFormat",
        "Engine",
        "EngineBackend",
        "EngineFailedError",
        "ErrorDetail",
        "ErrorResponse",
        "FallbackBackend",
        "FunctionCall",
        "FunctionDefinition",
        "HandleClient",
        "InvalidRequestError",
        "JsonObjectResponseFormat",
        "JsonSchemaResponseFormat",
        "JsonSchemaSpec",
        "LlamaCppEngine",
        "LlamaCppSettings",
        "ModelBackend",
        "ModelCard",
        "ModelList",
        "ModelNotFoundError",
        "ModelSettings",
        "ModelUnavailableError",
        "NamedFunction",
        "NamedToolChoice",
        "PassthroughEngine",
        "PassthroughSettings",
        "ResponseFormat",
        "ResponseFormatNotMetError",
        "SentenceTransformersEngine",
        "SentenceTransformersSettings",
        "ServeSettings",
        "StreamOptions",
        "TextResponseFormat",
        "ToolCall",
        "ToolCallDelta",
        "ToolChoice",
        "ToolDefinition",
        "TransformersEngine",
        "TransformersSettings",
        "VllmEngine",
        "VllmSettings",
        "app_builder",
        "build_app",
        "bundled_embedding_model_path",
        "bundled_model_path",
        "create_app",
        "create_engine",
        "deploy",
        "proxy_url",
        "require_vllm",
        "shutdown",
    ]
    for name in serve.__all__:
        assert hasattr(serve, name), name


def test_defaults_serve_the_bundled_model_on_localhost() -> None:
    settings = ServeSettings()

    assert settings.base_url == "http://127.0.0.1:8000/v1"
    chat, embeddings = settings.models
    assert (chat.name, chat.engine) == ("smollm2-135m", "llama_cpp")
    assert (embeddings.name, embeddings.engine) == ("minilm-l6-v2", "sentence_transformers")
    assert not chat.autoscaling
    # Both fit a 2-core machine with room left for the agents.
    assert chat.num_cpus + embeddings.num_cpus + settings.ingress_num_cpus <= 1.5
    assert settings.api_keys == []


def test_engine_picks_the_settings_class_and_defaults_to_llama_cpp() -> None:
    assert isinstance(MODEL.validate_python({"name": "m"}), LlamaCppSettings)
    assert isinstance(
        MODEL.validate_python({"engine": "sentence_transformers"}), SentenceTransformersSettings
    )
    passthrough = MODEL.validate_python(
        {"engine": "passthrough", "name": "gpt", "base_url": "https://api.example.com/v1"}
    )
    assert isinstance(passthrough, PassthroughSettings)
    assert passthrough.num_cpus < 0.1


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"host": "0.0.0.0", "port": 9000}, "http://127.0.0.1:9000/v1"),
        ({"route_prefix": "/models/"}, "http://127.0.0.1:8000/models/v1"),
        ({"host": "::1"}, "http://[::1]:8000/v1"),
    ],
)
def test_base_url(fields: dict[str, Any], expected: str) -> None:
    assert ServeSettings(**fields).base_url == expected


@pytest.mark.parametrize(
    ("cls", "fields", "fragment"),
    [
        (MODEL.validate_python, {"n_ctxx": 10}, "Extra inputs"),
        (MODEL.validate_python, {"engine": "tensorrt"}, "'llama_cpp', 'sentence_transformers'"),
        (MODEL.validate_python, {"min_replicas": 3, "max_replicas": 2}, "max_replicas"),
        (MODEL.validate_python, {"num_cpus": -1}, "greater than or equal to 0"),
        (MODEL.validate_python, {"name": "bad name"}, "pattern"),
        (MODEL.validate_python, {"engine": "sentence_transformers", "n_ctx": 5}, "Extra inputs"),
        (MODEL.validate_python, {"engine": "passthrough", "name": "x"}, "base_url"),
        (
            MODEL.validate_python,
            {"engine": "passthrough", "name": "x", "base_url": "ftp://h"},
            "pattern",
        ),
        (MODEL.validate_python, {"name": "a", "fallbacks": ["a"]}, "itself"),
        (ServeSettings, {"models": [{"name": "a", "fallbacks": ["b"]}]}, "not configured"),
        (ServeSettings, {"port": 0}, "greater than or equal to 1"),
        (ServeSettings, {"route_prefix": "v1"}, "pattern"),
        (ServeSettings, {"models": []}, "at least 1"),
        (ServeSettings, {"models": [{"name": "a"}, {"name": "a"}]}, "two models share"),
        (ServeSettings, {"models": [{"name": "a.b"}, {"name": "a:b"}]}, "deployment_name"),
    ],
)
def test_invalid_settings_are_rejected(cls: Any, fields: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        if cls is ServeSettings:
            cls(**fields)
        else:
            cls(fields)


def test_autoscaling_only_when_max_exceeds_min() -> None:
    assert LlamaCppSettings(min_replicas=1, max_replicas=3).autoscaling
    assert not LlamaCppSettings(min_replicas=2, max_replicas=2).autoscaling


def test_every_settings_field_is_described() -> None:
    for cls in (
        LlamaCppSettings,
        SentenceTransformersSettings,
        PassthroughSettings,
        TransformersSettings,
        VllmSettings,
        ServeSettings,
    ):
        for name, field in cls.model_fields.items():
            assert field.description, f"{cls.__name__}.{name}"


def test_config_file_matches_the_defaults() -> None:
    config = yaml.safe_load(CONFIG.read_text())

    [application] = config["applications"]
    settings = ServeSettings.model_validate(application["args"])
    assert settings == ServeSettings()
    assert application["import_path"] == "serve._app:app_builder"
    assert application["name"] == settings.app_name
    assert application["route_prefix"] == settings.route_prefix
    assert config["http_options"] == {"host": settings.host, "port": settings.port}
    assert config["logging_config"] == {"enable_access_log": settings.access_log}


def test_config_file_is_a_valid_serve_config() -> None:
    from ray.serve.schema import ServeDeploySchema

    ServeDeploySchema.model_validate(yaml.safe_load(CONFIG.read_text()))


def test_app_builder_rejects_unknown_args() -> None:
    with pytest.raises(ValidationError, match="Extra inputs"):
        serve.app_builder({"modles": []})


def test_fixed_replicas_without_autoscaling() -> None:
    from serve._app import REPLICA_ENV, model_deployment_options

    options = model_deployment_options(
        LlamaCppSettings(name="m.1", num_cpus=0.5, num_gpus=1, max_ongoing_requests=7)
    )

    assert options == {
        "name": "model-m_1",
        "ray_actor_options": {
            "num_cpus": 0.5,
            "num_gpus": 1,
            "runtime_env": {"env_vars": REPLICA_ENV},
        },
        "max_ongoing_requests": 7,
        "logging_config": {"enable_access_log": False},
        "num_replicas": 1,
    }


def test_autoscaling_config_when_max_exceeds_min() -> None:
    from serve._app import model_deployment_options

    options = model_deployment_options(
        LlamaCppSettings(
            min_replicas=0,
            max_replicas=4,
            target_ongoing_requests=3,
            upscale_delay_s=2,
            downscale_delay_s=60,
        )
    )

    assert "num_replicas" not in options
    assert options["autoscaling_config"] == {
        "min_replicas": 0,
        "max_replicas": 4,
        "target_ongoing_requests": 3,
        "upscale_delay_s": 2,
        "downscale_delay_s": 60,
    }


def test_build_app_makes_an_application_without_a_cluster() -> None:
    from ray.serve import Application

    settings = ServeSettings(models=[LlamaCppSettings(name="a"), LlamaCppSettings(name="b")])

    assert isinstance(serve.build_app(settings), Application)


def test_embeddings_deployment_runs_offline() -> None:
    from serve._app import model_deployment_options

    options = model_deployment_options(SentenceTransformersSettings(num_cpus=0.25))

    assert options["ray_actor_options"]["num_cpus"] == 0.25
    env_vars = options["ray_actor_options"]["runtime_env"]["env_vars"]
    assert env_vars["HF_HUB_OFFLINE"] == "1"
    assert env_vars["RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD"] == "0"


def test_api_key_env_is_read_at_the_edge() -> None:
    from protocols import ConfigurationError

    settings = ServeSettings.model_validate(
        {
            "models": [
                {
                    "engine": "passthrough",
                    "name": "r",
                    "base_url": "http://h/v1",
                    "api_key_env": "K",
                }
            ]
        }
    )

    [model] = settings.with_secrets({"K": "sk-123"}).models
    assert isinstance(model, PassthroughSettings)
    assert model.api_key == "sk-123"
    with pytest.raises(ConfigurationError, match="K, which is not set"):
        settings.with_secrets({})


def test_one_fixed_cpu_replica_is_colocated_by_default() -> None:
    assert LlamaCppSettings().colocated
    assert SentenceTransformersSettings().colocated
    # What scales or needs a GPU keeps a deployment of its own.
    assert not LlamaCppSettings(max_replicas=3).colocated
    assert not LlamaCppSettings(min_replicas=0).colocated
    assert not LlamaCppSettings(num_gpus=1).colocated
    assert not VllmSettings(name="v", path="/m").colocated
    # An explicit choice wins.
    assert not LlamaCppSettings(colocate=False).colocated
    assert LlamaCppSettings(num_gpus=1, colocate=True).colocated


def test_colocate_needs_one_fixed_replica() -> None:
    with pytest.raises(ValidationError, match="colocate: true .* min_replicas = max_replicas = 1"):
        LlamaCppSettings(colocate=True, max_replicas=2)


def test_ingress_reserves_what_its_colocated_models_need() -> None:
    from serve._app import OFFLINE_ENV, REPLICA_ENV, ingress_deployment_options

    settings = ServeSettings(
        ingress_num_cpus=0.1,
        models=[
            LlamaCppSettings(num_cpus=1.0),
            SentenceTransformersSettings(num_cpus=0.25),
            LlamaCppSettings(name="big", num_cpus=4, num_gpus=1),
        ],
    )

    options = ingress_deployment_options(settings)

    actor = options["ray_actor_options"]
    assert actor["num_cpus"] == pytest.approx(1.35)
    assert actor["num_gpus"] == 0
    assert actor["runtime_env"]["env_vars"] == {**REPLICA_ENV, **OFFLINE_ENV}
    assert options["num_replicas"] == 1
    assert options["max_ongoing_requests"] == settings.ingress_max_ongoing_requests
    assert options["logging_config"] == {"enable_access_log": False}


def test_access_log_reaches_every_replica_when_asked() -> None:
    from serve._app import ingress_deployment_options, model_deployment_options

    settings = ServeSettings(access_log=True)
    model = LlamaCppSettings(colocate=False)

    assert ingress_deployment_options(settings)["logging_config"] == {"enable_access_log": True}
    assert model_deployment_options(model, access_log=True)["logging_config"] == {
        "enable_access_log": True
    }
