"""Message validation: good messages round-trip, bad payloads are refused with clear errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from protocols import (
    MESSAGE_ADAPTER,
    Envelope,
    ErrorReport,
    MessageValidationError,
    Plan,
    PlanProposed,
    ReviewVerdict,
    Step,
    StepAssigned,
    StepResult,
    TaskSubmitted,
    TroupeError,
    parse_message,
)


def _step(step_id: str, *deps: str) -> Step:
    return Step(id=step_id, description=f"do {step_id}", tool="answer", depends_on=deps)


def test_every_message_round_trips_through_json() -> None:
    plan = Plan(steps=(_step("s1"), _step("s2", "s1")))
    messages = [
        TaskSubmitted(task_id="t1", goal="add numbers"),
        PlanProposed(task_id="t1", plan=plan, source="model"),
        StepAssigned(task_id="t1", goal="g", step=plan.steps[1], inputs={"s1": "4"}),
        StepResult(task_id="t1", step_id="s2", output="8", ok=True),
        ReviewVerdict(task_id="t1", step_id="s2", decision="approve", checked_by="model"),
        ErrorReport(sender="x", code="c", error_type="E", message="m", retryable=False),
    ]
    for message in messages:
        assert parse_message(message.model_dump_json()) == message
        envelope = Envelope.wrap(message, sender="test", topic="t")
        assert Envelope.model_validate_json(envelope.model_dump_json()) == envelope


def test_unknown_type_is_refused_naming_the_allowed_types() -> None:
    with pytest.raises(MessageValidationError) as info:
        parse_message({"type": "task.exploded", "task_id": "t1"})
    assert "task.exploded" in str(info.value)
    assert "task.submitted" in str(info.value)


def test_bad_fields_are_each_named() -> None:
    with pytest.raises(MessageValidationError) as info:
        parse_message({"type": "task.submitted", "task_id": "bad id!", "goal": "  ", "x": 1})
    text = str(info.value)
    assert "task_id" in text
    assert "goal must contain text" in text
    assert "x: Extra inputs are not permitted" in text
    assert "3 problem(s)" in text


def test_malformed_json_is_a_validation_error_not_a_crash() -> None:
    with pytest.raises(MessageValidationError, match="invalid message"):
        parse_message(b'{"type": "task.submitted", ')


def test_messages_are_frozen() -> None:
    task = TaskSubmitted(task_id="t1", goal="g")
    with pytest.raises(ValidationError):
        task.goal = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("steps", "fragment"),
    [
        ((_step("a"), _step("a")), "unique; repeated: a"),
        ((_step("a", "zz"),), "unknown step(s) zz"),
        ((_step("a", "a"),), "depends on itself"),
        ((_step("a", "c"), _step("b", "a"), _step("c", "b")), "cycle: a -> c -> b -> a"),
    ],
)
def test_plan_rejects_what_is_not_a_dag(steps: tuple[Step, ...], fragment: str) -> None:
    with pytest.raises(ValidationError) as info:
        Plan(steps=steps)
    assert fragment in str(info.value)


def test_plan_ready_and_sinks_follow_dependencies() -> None:
    plan = Plan(steps=(_step("a"), _step("b"), _step("c", "a", "b")))
    assert [s.id for s in plan.ready([])] == ["a", "b"]
    assert [s.id for s in plan.ready(["a"])] == ["b"]
    assert [s.id for s in plan.ready(["a", "b"])] == ["c"]
    assert [s.id for s in plan.sinks()] == ["c"]


def test_error_report_keeps_retryable_from_troupe_errors_only() -> None:
    report = ErrorReport.from_exception(TroupeError("x", retryable=True), sender="a")
    assert report.retryable and report.code == "troupe_error"
    crash = ErrorReport.from_exception(KeyError("k"), sender="a")
    assert not crash.retryable and crash.code == "internal_error"


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=20,
)
_types = st.sampled_from(
    ["task.submitted", "plan.proposed", "step.assigned", "step.result", "review.verdict", "x"]
)


@settings(max_examples=300, deadline=None)
@given(payload=st.dictionaries(st.text(max_size=12), _json, max_size=6), kind=_types)
def test_random_payloads_are_refused_cleanly(payload: dict[str, object], kind: str) -> None:
    payload["type"] = kind
    try:
        message = parse_message(payload)
    except MessageValidationError as exc:
        assert str(exc).startswith("invalid message")
    else:  # the rare random payload that is valid must survive a round trip
        assert MESSAGE_ADAPTER.validate_json(json.dumps(message.model_dump(mode="json")))


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=200))
def test_random_bytes_are_refused_cleanly(data: bytes) -> None:
    with pytest.raises(MessageValidationError):
        parse_message(data)


class _Echo:
    async def deliver(self, envelope: Envelope) -> Envelope | None:
        return envelope.reply(envelope.payload, sender="echo")


def _good_envelope_json() -> str:
    task = TaskSubmitted(task_id="t1", goal="g")
    return Envelope.wrap(task, sender="test", topic="t").model_dump_json()


@pytest.fixture(scope="module")
def fuzzed_actor(ray_session: None) -> Iterator[Any]:
    import ray

    from protocols import ConsumerActor

    actor = ray.remote(ConsumerActor).options(num_cpus=0).remote(_Echo, name="fuzzed")
    yield actor
    ray.kill(actor, no_restart=True)


@pytest.mark.ray
@settings(max_examples=60, deadline=None)
@given(
    junk=st.one_of(
        st.binary(max_size=120),
        st.dictionaries(st.text(max_size=8), _json, max_size=5).map(json.dumps),
        st.text(max_size=80).map(lambda t: _good_envelope_json().replace('"g"', json.dumps(t))),
        st.sampled_from(["", "null", "[]", '{"payload": {}}', '{"schema_version": "9.0"}']),
    )
)
def test_a_consumer_actor_survives_any_payload(fuzzed_actor: Any, junk: str | bytes) -> None:
    import ray

    reply = ray.get(fuzzed_actor.deliver_json.remote(junk))
    if isinstance(reply, ErrorReport):
        assert reply.code == "invalid_message"
        assert reply.message.startswith("invalid message")
    else:  # a text goal that made a valid envelope is handled normally
        assert isinstance(reply, Envelope)
    assert ray.get(fuzzed_actor.stats.remote()).name == "fuzzed"  # alive and answering


def test_ray_pickles_envelopes_and_outcomes_with_the_standard_pickler() -> None:
    import pickle

    from ray import cloudpickle

    from protocols import TaskCompleted

    plan = Plan(steps=(_step("s1"),))
    envelope = Envelope.wrap(
        StepAssigned(task_id="t1", goal="g", step=plan.steps[0]), sender="c", topic="x"
    )
    outcome = TaskCompleted(task_id="t1", goal="g", final_answer="4", steps=(), trace=())
    for value in (envelope, outcome):
        data = cloudpickle.dumps(value)
        assert cloudpickle.loads(data) == value
        # the reducer hands the object to the standard pickler: its bytes are nested inside
        assert pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL) in data
