"""Episode and query validation, and deterministic ids."""

from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from memory import Episode, RecallQuery

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def make(**overrides: object) -> Episode:
    fields: dict[str, object] = {
        "kind": "observation",
        "content": "the build failed",
        "agent": "executor",
        "task_id": "t1",
        "step_id": "s1",
        "created_at": NOW,
    }
    fields.update(overrides)
    return Episode.create(**fields)  # type: ignore[arg-type]


def only_error(exc: pytest.ExceptionInfo[ValidationError]) -> tuple[tuple[str | int, ...], str]:
    errors = exc.value.errors()
    assert len(errors) == 1, errors
    return errors[0]["loc"], errors[0]["msg"]


@pytest.mark.parametrize("content", ["", "   ", "\n\t"])
def test_blank_content_is_rejected(content: str) -> None:
    with pytest.raises(ValidationError) as exc:
        make(content=content)
    loc, msg = only_error(exc)
    assert loc == ("content",)
    assert "non-whitespace" in msg


def test_content_over_the_limit_is_rejected() -> None:
    make(content="x" * 20_000)
    with pytest.raises(ValidationError) as exc:
        make(content="x" * 20_001)
    loc, msg = only_error(exc)
    assert loc == ("content",)
    assert "20000" in msg


@pytest.mark.parametrize("importance", [2, -0.1])
def test_importance_outside_unit_interval_is_rejected(importance: float) -> None:
    with pytest.raises(ValidationError) as exc:
        make(importance=importance)
    loc, _ = only_error(exc)
    assert loc == ("importance",)


def test_unknown_field_is_rejected() -> None:
    data = make().model_dump()
    data["colour"] = "blue"
    with pytest.raises(ValidationError) as exc:
        Episode.model_validate(data)
    loc, msg = only_error(exc)
    assert loc == ("colour",)
    assert "Extra inputs are not permitted" in msg


def test_unknown_kind_is_rejected() -> None:
    with pytest.raises(ValidationError) as exc:
        make(kind="dream")
    assert only_error(exc)[0] == ("kind",)


def test_naive_datetime_is_rejected_and_aware_one_becomes_utc() -> None:
    with pytest.raises(ValidationError) as exc:
        make(created_at=datetime(2025, 6, 1, 12, 0))
    loc, msg = only_error(exc)
    assert loc == ("created_at",)
    assert "timezone-aware" in msg
    plus_two = datetime(2025, 6, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    assert make(created_at=plus_two).created_at.utcoffset() == timedelta(0)
    assert make(created_at=plus_two).created_at == NOW


def test_oversized_metadata_is_rejected() -> None:
    with pytest.raises(ValidationError) as exc:
        make(metadata={f"k{i}": "v" for i in range(33)})
    assert only_error(exc)[0] == ("metadata",)
    with pytest.raises(ValidationError, match="at most 65536"):
        make(metadata={"plan": "x" * 65_537})
    assert make(metadata={"plan": '{"steps": []}'}).metadata == {"plan": '{"steps": []}'}


def test_episode_is_frozen() -> None:
    episode = make()
    with pytest.raises(ValidationError):
        episode.content = "changed"


def test_same_origin_gives_same_id() -> None:
    first = make()
    # A retry: later time, different wording; the origin is the same, so is the id.
    retry = make(created_at=NOW + timedelta(minutes=1), content="the build failed again")
    assert first.id == retry.id


@pytest.mark.parametrize(
    "change",
    [
        {"step_id": "s2"},
        {"task_id": "t2"},
        {"agent": "planner"},
        {"kind": "action"},
        {"namespace": "other"},
        {"key": "call-1"},
    ],
)
def test_different_origin_gives_different_id(change: dict[str, str]) -> None:
    assert make(**change).id != make().id


def test_without_step_or_key_content_discriminates() -> None:
    a = make(step_id=None, content="saw a cat")
    b = make(step_id=None, content="saw a dog")
    assert a.id != b.id
    assert make(step_id=None, content="saw a cat").id == a.id


def test_json_round_trip_is_lossless() -> None:
    episode = make(tags=("a", "b"), metadata={"k": "v"}, importance=0.9, trusted=True)
    assert Episode.model_validate_json(episode.model_dump_json()) == episode


@pytest.mark.parametrize("k", [0, 101])
def test_query_k_is_bounded(k: int) -> None:
    with pytest.raises(ValidationError) as exc:
        RecallQuery(text="x", k=k)
    assert only_error(exc)[0] == ("k",)


def test_query_rejects_empty_window_and_unknown_fields() -> None:
    with pytest.raises(ValidationError, match=r"since .* must be before until"):
        RecallQuery(text="x", since=NOW, until=NOW)
    with pytest.raises(ValidationError, match="Extra inputs"):
        RecallQuery(text="x", limit=3)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="kinds"):
        RecallQuery(text="x", kinds=("dream",))  # type: ignore[arg-type]
