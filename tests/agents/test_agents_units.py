"""Planner, executor, reviewer, tools and schemas, one at a time."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents import (
    Executor,
    Planner,
    Reviewer,
    TroupeSettings,
    calculate,
    default_tools,
    draft_to_plan,
    plan_schema,
    rule_verdict,
    schema_token_bound,
)
from agents._tools import plan_tools
from memory import EmbeddedStore, LocalMemory, RecallQuery
from protocols import (
    AgentError,
    ConfigurationError,
    PlanProposed,
    PlanRequested,
    ReviewRequested,
    ReviewVerdict,
    Step,
    StepAssigned,
    StepResult,
    TaskSubmitted,
    ToolCall,
)
from tests.fakes import ScriptedModelClient

TOOLS = default_tools()
PLAN_TOOLS = plan_tools(TOOLS)


def _memory() -> LocalMemory:
    return LocalMemory(EmbeddedStore(None))


# -- calculator -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("17 * 23 + 4", 395),
        ("2 ** 10", 1024),
        ("-(3 - 5) / 4", 0.5),
        ("7 // 2 % 3", 0),
        ("1,000 × 3 =", 3000),
        ("2^3", 8),
    ],
)
def test_calculator_computes(expression: str, value: float) -> None:
    assert calculate(expression) == value


@pytest.mark.parametrize(
    ("expression", "fragment"),
    [
        ("__import__('os')", "numbers and"),
        ("x + 1", "Name"),
        ("(1).real", "Attribute"),
        ("9 ** 999", "exponent"),
        ("1 / 0", "division by zero"),
        ("", "needs an expression"),
        ("2 +", "not an arithmetic expression"),
        ("True + 1", "not numbers"),
        ("1" * 300, "limit is 200"),
    ],
)
def test_calculator_refuses_with_a_reason(expression: str, fragment: str) -> None:
    with pytest.raises(AgentError) as info:
        calculate(expression)
    assert fragment in info.value.message


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_calculator_never_fails_other_than_with_agent_error(text: str) -> None:
    with contextlib.suppress(AgentError):
        calculate(text)


# -- schemas ----------------------------------------------------------------------------------


def test_plan_schema_is_bounded_and_its_token_bound_covers_a_full_plan() -> None:
    schema = plan_schema(PLAN_TOOLS, max_steps=3, max_chars=50)
    bound = schema_token_bound(schema)
    biggest = {
        "steps": [
            {
                "description": "d" * 50,
                "tool": "calculator",
                "input": "i" * 50,
                "depends_on": [1] * 3,
            }
        ]
        * 3
    }
    assert len(json.dumps(biggest)) <= bound < 3 * len(json.dumps(biggest))


def test_unbounded_schema_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match=r"\$.name needs maxLength"):
        schema_token_bound({"type": "object", "properties": {"name": {"type": "string"}}})
    with pytest.raises(ConfigurationError, match="needs maxItems"):
        schema_token_bound({"type": "array", "items": {"type": "integer"}})


def test_draft_to_plan_numbers_steps_and_checks_tools() -> None:
    draft = {
        "steps": [
            {"description": "a", "tool": "calculator", "input": "1+1", "depends_on": []},
            {"description": "b", "tool": "answer", "input": "", "depends_on": [1, 1]},
        ]
    }
    plan = draft_to_plan(draft, tools=PLAN_TOOLS, max_steps=4)
    assert [(s.id, s.depends_on) for s in plan.steps] == [("s1", ()), ("s2", ("s1",))]
    draft["steps"][0]["tool"] = "shell"
    with pytest.raises(AgentError, match="unknown tool 'shell'"):
        draft_to_plan(draft, tools=PLAN_TOOLS, max_steps=4)
    with pytest.raises(AgentError, match="steps: Field required"):
        draft_to_plan({"plan": []}, tools=PLAN_TOOLS, max_steps=4)


def test_draft_to_plan_merges_repeated_steps_and_refuses_step_zero() -> None:
    same = {"description": "a", "tool": "answer", "input": "x", "depends_on": []}
    draft = {
        "steps": [
            same,
            same,
            {"description": "b", "tool": "answer", "input": "", "depends_on": [2]},
        ]
    }
    plan = draft_to_plan(draft, tools=PLAN_TOOLS, max_steps=4)
    assert [(s.id, s.depends_on) for s in plan.steps] == [("s1", ()), ("s2", ("s1",))]
    draft["steps"][2]["depends_on"] = [0]
    with pytest.raises(AgentError, match="steps are numbered from 1"):
        draft_to_plan(draft, tools=PLAN_TOOLS, max_steps=4)


def test_plan_schema_allows_only_earlier_steps_as_dependencies() -> None:
    schema = plan_schema(PLAN_TOOLS, max_steps=3, max_chars=40)
    plans = schema["properties"]["steps"]["anyOf"]
    assert [len(p["prefixItems"]) for p in plans] == [1, 2, 3]
    third = plans[2]["prefixItems"][2]["properties"]["depends_on"]
    assert third["items"]["enum"] == [1, 2]
    first = plans[2]["prefixItems"][0]["properties"]["depends_on"]
    assert first["maxItems"] == 0


# -- planner ----------------------------------------------------------------------------------


def test_planner_asks_under_the_schema_and_reports_attempts() -> None:
    model = ScriptedModelClient(
        ("plan", {"steps": [{"description": "a", "tool": "nope", "input": "", "depends_on": []}]}),
        (
            "plan",
            {"steps": [{"description": "a", "tool": "answer", "input": "", "depends_on": []}]},
        ),
    )
    planner = Planner(model, _memory(), TOOLS, max_attempts=2)
    proposed = asyncio.run(planner.handle(PlanRequested(task_id="t1", goal="say hi")))
    assert isinstance(proposed, PlanProposed)
    assert (proposed.source, proposed.attempts) == ("model", 2)
    assert "unknown tool 'nope'" in proposed.notes
    request = model.requests[0]
    assert request.schema is not None
    assert request.max_tokens == schema_token_bound(request.schema)
    assert request.template.startswith("planner@")
    model.assert_complete()


def test_planner_reuses_the_plan_of_its_goal_among_many_closer_ones() -> None:
    from agents._planner import goal_key, goal_tag
    from memory import Episode
    from protocols import Plan

    def plan_episode(goal: str, tool: str, importance: float) -> Episode:
        plan = Plan(steps=(Step(id="s1", description=f"do it with {tool}", tool=tool),))
        return Episode.create(
            kind="plan",
            content=f"plan for: {goal}",
            importance=importance,
            tags=(goal_tag(goal),),
            task_id=f"task-{len(goal)}",
            agent="coordinator",
            metadata={
                "goal_key": goal_key(goal),
                "outcome": "completed",
                "plan": plan.model_dump_json(),
            },
        )

    memory = _memory()
    goal = "sum the invoice totals"
    # older and less important than eight plans of goals that share its words
    episodes = [plan_episode(goal, "calculator", 0.1)] + [
        plan_episode(f"{goal} of region {n}", "answer", 1.0) for n in range(8)
    ]
    asyncio.run(memory.remember(episodes))
    planner = Planner(ScriptedModelClient(), memory, TOOLS)
    proposed = asyncio.run(planner.handle(PlanRequested(task_id="t9", goal=goal.upper())))
    assert isinstance(proposed, PlanProposed)
    assert proposed.source == "memory"
    assert [s.tool for s in proposed.plan.steps] == ["calculator"]


def test_planner_refuses_other_messages() -> None:
    planner = Planner(ScriptedModelClient(), _memory(), TOOLS)
    with pytest.raises(AgentError, match="planner cannot handle 'task.submitted'"):
        asyncio.run(planner.handle(TaskSubmitted(task_id="t1", goal="g")))


# -- executor ---------------------------------------------------------------------------------


def _assigned(tool: str, argument: str) -> StepAssigned:
    step = Step(id="s1", description="compute the total", tool=tool, input=argument)
    return StepAssigned(task_id="t1", goal="total of 2 and 3", step=step)


def test_executor_runs_the_calculator_without_the_model_and_records_episodes() -> None:
    memory = _memory()
    executor = Executor(ScriptedModelClient(), memory, TOOLS)

    async def handle() -> object:
        result = await executor.handle(_assigned("calculator", "2 + 3"))
        await executor.flush()  # the episodes are written behind the result
        return result

    result = asyncio.run(handle())
    assert isinstance(result, StepResult)
    assert (result.output, result.ok) == ("5", True)
    assert result.tool_calls == (
        ToolCall(tool="calculator", arguments='{"expression": "2 + 3"}', output="5", ok=True),
    )
    found = asyncio.run(memory.recall(RecallQuery(text="compute total", task_id="t1", k=10)))
    assert {s.episode.kind for s in found} == {"action", "tool_result"}


def test_executor_asks_the_model_for_an_expression_when_the_input_is_not_one() -> None:
    model = ScriptedModelClient(("expression", {"expression": "2 + 3"}))
    executor = Executor(model, _memory(), TOOLS)
    result = asyncio.run(executor.handle(_assigned("calculator", "add two and three")))
    assert isinstance(result, StepResult)
    assert (result.output, result.ok, len(result.tool_calls)) == ("5", True, 2)
    assert not result.tool_calls[0].ok
    model.assert_complete()


def test_executor_reports_a_tool_failure_as_a_failed_result() -> None:
    model = ScriptedModelClient(("expression", {"expression": "two plus three"}))
    executor = Executor(model, _memory(), TOOLS)
    result = asyncio.run(executor.handle(_assigned("calculator", "add them")))
    assert isinstance(result, StepResult)
    assert not result.ok
    assert result.output.startswith("calculator failed: not an arithmetic expression")


def test_answer_step_on_an_expression_gets_the_computed_value_as_evidence() -> None:
    model = ScriptedModelClient(("step_answer", {"answer": "The total is 5."}))
    executor = Executor(model, _memory(), TOOLS)
    result = asyncio.run(executor.handle(_assigned("answer", "2 + 3")))
    assert isinstance(result, StepResult)
    assert result.tool_calls == (
        ToolCall(tool="calculator", arguments='{"expression": "2 + 3"}', output="5", ok=True),
    )
    assert "Calculator: 2 + 3 = 5" in model.requests[0].messages[-1]["content"]
    # words are not arithmetic: no evidence, no calculator note
    model = ScriptedModelClient(("step_answer", {"answer": "hello"}))
    result = asyncio.run(Executor(model, _memory(), TOOLS).handle(_assigned("answer", "greet")))
    assert isinstance(result, StepResult) and result.tool_calls == ()
    assert "Calculator" not in model.requests[0].messages[-1]["content"]


def test_executor_refuses_an_unknown_tool() -> None:
    executor = Executor(ScriptedModelClient(), _memory(), TOOLS)
    with pytest.raises(AgentError, match="unknown tool 'shell'; known tools: answer, calculator"):
        asyncio.run(executor.handle(_assigned("shell", "ls")))


# -- reviewer ---------------------------------------------------------------------------------


def _review(
    result: StepResult,
    *,
    goal: str = "add 1 and 1",
    final: bool = False,
    inputs: dict[str, str] | None = None,
    evidence: tuple[ToolCall, ...] = (),
) -> ReviewRequested:
    step = Step(id="s1", description="d", tool="answer")
    return ReviewRequested(
        task_id="t1",
        goal=goal,
        step=step,
        result=result,
        final=final,
        inputs=inputs or {},
        evidence=evidence,
    )


def test_reviewer_rules_decide_failed_and_tool_computed_results() -> None:
    failed = StepResult(task_id="t1", step_id="s1", output="calculator failed: x", ok=False)
    verdict = rule_verdict(_review(failed))
    assert verdict is not None and verdict.decision == "revise" and verdict.checked_by == "rule"
    call = ToolCall(tool="calculator", arguments="1+1", output="2", ok=True)
    computed = StepResult(task_id="t1", step_id="s1", output="2", ok=True, tool_calls=(call,))
    verdict = rule_verdict(_review(computed))
    assert verdict is not None and verdict.decision == "approve"
    words = StepResult(task_id="t1", step_id="s1", output="it is 2", ok=True)
    assert rule_verdict(_review(words)) is None


def test_reviewer_sends_back_a_calculation_on_invented_numbers() -> None:
    call = ToolCall(tool="calculator", arguments="12 * (3 + 4)", output="84", ok=True)
    computed = StepResult(task_id="t1", step_id="s1", output="84", ok=True, tool_calls=(call,))
    verdict = rule_verdict(_review(computed, goal="What is 17 * 23 + 4?"))
    assert verdict is not None and verdict.decision == "revise"
    assert "uses 3, 12, found neither in the goal" in verdict.feedback
    # numbers from earlier results count as grounded
    verdict = rule_verdict(_review(computed, goal="x", inputs={"s0": "12, 3 and 4"}))
    assert verdict is not None and verdict.decision == "approve"


def test_reviewer_checks_an_answer_written_around_a_tool_result() -> None:
    call = ToolCall(tool="calculator", arguments="1 + 1", output="2", ok=True)
    wrong = StepResult(task_id="t1", step_id="s1", output="It is 3.", ok=True, tool_calls=(call,))
    verdict = rule_verdict(_review(wrong))
    assert verdict is not None and verdict.decision == "revise"
    assert verdict.feedback == "the answer must state the computed result: 2"
    right = StepResult(task_id="t1", step_id="s1", output="It is 2.", ok=True, tool_calls=(call,))
    verdict = rule_verdict(_review(right))
    assert verdict is not None and verdict.decision == "approve"


def test_reviewer_checks_a_final_answer_states_the_computed_result() -> None:
    evidence = (ToolCall(tool="calculator", arguments="17*23+4", output="395", ok=True),)
    vague = StepResult(task_id="t1", step_id="final", output="It is a big number.", ok=True)
    verdict = rule_verdict(_review(vague, final=True, evidence=evidence))
    assert verdict is not None and verdict.decision == "revise"
    assert verdict.feedback == "the answer must state the computed result: 395"
    stated = StepResult(task_id="t1", step_id="final", output="The answer is 395.", ok=True)
    verdict = rule_verdict(_review(stated, final=True, evidence=evidence))
    assert verdict is not None and verdict.decision == "approve"
    # with no tool evidence, only the model can judge a final answer
    assert rule_verdict(_review(stated, final=True)) is None


def test_reviewer_asks_the_model_when_no_rule_decides() -> None:
    model = ScriptedModelClient(("review", {"decision": "revise", "feedback": "give the number"}))
    words = StepResult(task_id="t1", step_id="s1", output="it is big", ok=True)
    verdict = asyncio.run(Reviewer(model).handle(_review(words)))
    assert isinstance(verdict, ReviewVerdict)
    assert (verdict.decision, verdict.feedback, verdict.checked_by) == (
        "revise",
        "give the number",
        "model",
    )
    assert "Result: it is big" in model.requests[0].messages[-1]["content"]


# -- settings ---------------------------------------------------------------------------------


def test_settings_file_errors_name_the_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "troupe.yaml"
    path.write_text("agents:\n  executors: 0\n  colour: red\n")
    with pytest.raises(ConfigurationError) as info:
        TroupeSettings.load(path)
    assert str(path) in info.value.message
    assert "agents.executors" in info.value.message
    assert "agents.colour: Extra inputs are not permitted" in info.value.message
    path.write_text("[1, 2]")
    with pytest.raises(ConfigurationError, match="mapping at the top level"):
        TroupeSettings.load(path)
    with pytest.raises(ConfigurationError, match="cannot read settings file"):
        TroupeSettings.load(tmp_path / "missing.toml")


def test_settings_point_unset_roles_at_the_local_endpoint(tmp_path: Path) -> None:
    path = tmp_path / "troupe.toml"
    path.write_text('[agents.planner]\nbase_url = "http://big:9000/v1"\nmodel = "big"\n')
    settings = TroupeSettings.load(path).with_local_endpoint("http://127.0.0.1:8000/v1")
    assert settings.agents.planner.base_url == "http://big:9000/v1"
    assert settings.agents.executor.base_url == "http://127.0.0.1:8000/v1"


def test_weaviate_memory_needs_its_settings_and_an_unreachable_one_is_an_error() -> None:
    from agents._team import _start_memory

    with pytest.raises(ValueError, match="backend weaviate needs memory.weaviate"):
        TroupeSettings.model_validate({"memory": {"backend": "weaviate"}})
    settings = TroupeSettings.model_validate(
        {
            "memory": {
                "backend": "weaviate",
                "weaviate": {"url": "http://127.0.0.1:9", "grpc_port": 9},
            }
        }
    )
    with pytest.raises(ConfigurationError):
        _start_memory(settings)


def test_memory_embeddings_default_to_the_local_serve_app() -> None:
    settings = TroupeSettings().with_local_endpoint("http://127.0.0.1:8000/v1")
    assert settings.memory.embeddings_base_url == "http://127.0.0.1:8000/v1"
    assert settings.memory.embedding_model == "minilm-l6-v2"
    custom = TroupeSettings.model_validate(
        {"memory": {"embeddings_base_url": "http://emb:9000/v1"}}
    ).with_local_endpoint("http://127.0.0.1:8000/v1")
    assert custom.memory.embeddings_base_url == "http://emb:9000/v1"
