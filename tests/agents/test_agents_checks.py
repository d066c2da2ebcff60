"""The reviewer's declared checks: each kind passing and failing, bad definitions, predicate
tools, the placeholder detector, and usage on model reviews."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from pydantic import Field

from agents._reviewer import CheckArgs, Reviewer, find_placeholders
from agents._toolkit import ToolArgs, ToolContext, ToolRegistry, ToolResult, TypedTool
from protocols import (
    AgentError,
    CheckKind,
    ReviewRequested,
    ReviewVerdict,
    Step,
    StepCheck,
    StepResult,
    ToolCall,
)
from tests.fakes import ScriptedModelClient


def _request(
    output: str,
    *checks: StepCheck,
    ok: bool = True,
    step_input: str = "",
    inputs: dict[str, str] | None = None,
    tool: str = "answer",
    tool_calls: tuple[ToolCall, ...] = (),
) -> ReviewRequested:
    step = Step(id="draft", description="Write it", tool=tool, input=step_input, checks=checks)
    return ReviewRequested(
        task_id="t1",
        goal="write a message",
        step=step,
        result=StepResult(
            task_id="t1", step_id="draft", output=output, ok=ok, tool_calls=tool_calls
        ),
        inputs=inputs or {},
    )


def _review(request: ReviewRequested, *, tools: ToolRegistry | None = None) -> ReviewVerdict:
    """Reviews with a model that must not be asked: a check or rule has to decide."""
    model = ScriptedModelClient()
    verdict = asyncio.run(Reviewer(model, tools=tools).handle(request))
    assert isinstance(verdict, ReviewVerdict)
    return verdict


def _approving(request: ReviewRequested, *, tools: ToolRegistry | None = None) -> ReviewVerdict:
    """Reviews with a model that approves once: every check passed when it is asked."""
    model = ScriptedModelClient(("review", {"decision": "approve", "feedback": "good"}))
    verdict = asyncio.run(Reviewer(model, tools=tools).handle(request))
    model.assert_complete()
    assert isinstance(verdict, ReviewVerdict)
    return verdict


def check(kind: CheckKind, value: str = "", message: str = "") -> StepCheck:
    return StepCheck(kind=kind, value=value, message=message)


# -- each kind, failing with generated feedback and passing -----------------------------------

FAILING: list[tuple[StepCheck, str, str]] = [
    (check("min_chars", "20"), "too short", "the output is 9 characters, the minimum is 20"),
    (check("max_chars", "5"), "far too long", "the output is 12 characters, the limit is 5"),
    (check("contains", "Ana Lima"), "Hello Bob", "the output must contain 'Ana Lima'"),
    (
        check("not_contains", "salary"),
        "Our SALARY is great",
        "the output contains 'salary', which it must not",
    ),
    (check("regex", r"^Hello\b"), "Hi there", r"the output does not match ^Hello\b"),
    (
        check("json_schema", '{"type": "object"}'),
        "not json",
        "the output is not JSON (Expecting value at character 0)",
    ),
    (
        check("tool", "no_placeholders"),
        "Dear [Name], welcome to <company>.",
        "the output contains the placeholders '[Name]', '<company>'; write the real text instead",
    ),
]

PASSING: list[tuple[StepCheck, str]] = [
    (check("min_chars", "5"), "long enough"),
    (check("max_chars", "20"), "  short  "),  # surrounding space does not count
    (check("contains", "ana lima"), "Hello Ana Lima"),  # case-insensitive
    (check("not_contains", "salary"), "Hello"),
    (check("regex", r"\d{3}"), "call 555 now"),
    (check("json_schema", '{"type": "object", "required": ["a"]}'), '{"a": 1}'),
    (check("tool", "no_placeholders"), "Dear Ana, welcome to Acme."),
]


@pytest.mark.parametrize(("the_check", "output", "feedback"), FAILING)
def test_a_failing_check_sends_the_result_back_with_concrete_feedback(
    the_check: StepCheck, output: str, feedback: str
) -> None:
    verdict = _review(_request(output, the_check))
    assert (verdict.decision, verdict.checked_by, verdict.feedback) == ("revise", "rule", feedback)
    assert verdict.usage.model_calls == 0


@pytest.mark.parametrize(("the_check", "output"), PASSING)
def test_passing_every_declared_check_approves_without_asking_the_model(
    the_check: StepCheck, output: str
) -> None:
    verdict = _review(_request(output, the_check))
    assert (verdict.decision, verdict.checked_by) == ("approve", "rule")
    assert verdict.feedback == "passed its 1 declared check(s)"
    assert verdict.usage.model_calls == 0


def test_a_step_without_checks_is_still_judged_by_the_model() -> None:
    verdict = _approving(_request("a fine message"))
    assert (verdict.decision, verdict.checked_by) == ("approve", "model")


def test_the_check_message_replaces_the_generated_feedback() -> None:
    verdict = _review(_request("x" * 30, check("max_chars", "10", message="keep it under 10")))
    assert verdict.feedback == "keep it under 10"


def test_the_first_failing_check_decides() -> None:
    request = _request(
        "Dear [Name]",
        check("min_chars", "3"),  # passes
        check("contains", "Ana"),  # fails first
        check("tool", "no_placeholders"),  # would fail too
    )
    assert _review(request).feedback == "the output must contain 'Ana'"


def test_json_schema_errors_name_the_path() -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "skills": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["name"],
    }
    request = _request('{"skills": ["python", 3]}', check("json_schema", json.dumps(schema)))
    feedback = _review(request).feedback
    assert feedback.startswith("the output does not match the JSON schema: ")
    assert "at $: 'name' is a required property" in feedback
    assert "at $.skills[1]: 3 is not of type 'string'" in feedback


def test_checks_run_before_the_rule_that_approves_a_tool_output() -> None:
    call = ToolCall(tool="lookup", arguments="ana", output="2", ok=True)
    request = _request("2", check("min_chars", "3"), tool="lookup", tool_calls=(call,))
    verdict = _review(request)
    assert verdict.decision == "revise"
    assert verdict.feedback == "the output is 1 characters, the minimum is 3"
    # without the check, the rule approves it
    assert _review(_request("2", tool="lookup", tool_calls=(call,))).decision == "approve"


def test_a_failed_step_is_sent_back_as_failed_not_checked() -> None:
    verdict = _review(_request("tool failed: boom", check("contains", "Ana"), ok=False))
    assert verdict.feedback == "the step did not succeed: tool failed: boom"


# -- bad check definitions --------------------------------------------------------------------

BAD: list[tuple[StepCheck, str]] = [
    (check("regex", "(unclosed"), "check 0 (regex '(unclosed') is invalid: not a regular expr"),
    (check("min_chars", "many"), "check 0 (min_chars 'many') is invalid: value must be a whole"),
    (check("max_chars", "-1"), "check 0 (max_chars '-1') is invalid: value must not be negative"),
    (check("contains", "  "), "is invalid: value must be the text to look for"),
    (check("json_schema", "{not json"), "is invalid: value is not JSON"),
    (check("json_schema", '{"type": 12}'), "is invalid: not a valid JSON Schema: 12 is not valid"),
    (check("json_schema", "[1, 2]"), "is invalid: value must be a JSON Schema object"),
    (check("tool", "spellcheck"), "is invalid: no predicate tool 'spellcheck'; known: "),
]


@pytest.mark.parametrize(("the_check", "message"), BAD)
def test_a_bad_check_definition_is_a_clear_agent_error(the_check: StepCheck, message: str) -> None:
    with pytest.raises(AgentError) as info:
        _review(_request("some output", the_check))
    assert info.value.code == "bad_check"
    assert info.value.retryable is False
    assert message in info.value.message


def test_a_bad_check_is_reported_even_behind_a_failing_one() -> None:
    request = _request("x", check("min_chars", "5"), check("regex", "["))
    with pytest.raises(AgentError, match=r"check 1 \(regex '\['\) is invalid"):
        _review(request)


# -- predicate tools --------------------------------------------------------------------------


class MentionsArgs(CheckArgs):
    """Uses the output, the step input and the dependency outputs."""


class MentionsCandidate(TypedTool[MentionsArgs]):
    """ok when the output names the candidate given by the dependency ``pick``."""

    name = "mentions_candidate"
    description = "The output names the picked candidate."
    args_model = MentionsArgs

    def __init__(self) -> None:
        self.seen: list[MentionsArgs] = []

    async def run(self, args: MentionsArgs, ctx: ToolContext) -> ToolResult:
        self.seen.append(args)
        name = args.inputs.get("pick", "")
        if name and name in args.output:
            return self.result("named")
        return self.fail(f"the message must name {name!r}")


class OutputOnlyArgs(ToolArgs):
    output: str


class ShortTool(TypedTool[OutputOnlyArgs]):
    name = "short"
    description = "ok under 10 characters"
    args_model = OutputOnlyArgs

    async def run(self, args: OutputOnlyArgs, ctx: ToolContext) -> ToolResult:
        return self.result("ok") if len(args.output) < 10 else self.fail("too long for short")


class NoOutputArgs(ToolArgs):
    text: str = Field(default="")


class NoOutputTool(TypedTool[NoOutputArgs]):
    name = "no_output"
    description = "takes no output"
    args_model = NoOutputArgs

    async def run(self, args: NoOutputArgs, ctx: ToolContext) -> ToolResult:
        return self.result("ok")


class NeedsMoreArgs(ToolArgs):
    output: str
    threshold: int


class NeedsMoreTool(TypedTool[NeedsMoreArgs]):
    name = "needs_more"
    description = "needs an argument the reviewer cannot give"
    args_model = NeedsMoreArgs

    async def run(self, args: NeedsMoreArgs, ctx: ToolContext) -> ToolResult:
        return self.result("ok")


class SlowTool(TypedTool[OutputOnlyArgs]):
    name = "slow"
    description = "never answers in time"
    args_model = OutputOnlyArgs
    timeout_s = 0.05

    async def run(self, args: OutputOnlyArgs, ctx: ToolContext) -> ToolResult:
        await asyncio.sleep(5)
        return self.result("late")


class CrashingTool(TypedTool[OutputOnlyArgs]):
    name = "crashing"
    description = "a predicate with a bug"
    args_model = OutputOnlyArgs

    async def run(self, args: OutputOnlyArgs, ctx: ToolContext) -> ToolResult:
        raise KeyError("boom")


def test_a_predicate_tool_gets_the_output_step_input_and_dependency_outputs() -> None:
    tool = MentionsCandidate()
    tools = ToolRegistry([tool])
    request = _request(
        "Dear Ana Lima, ...",
        check("tool", "mentions_candidate"),
        step_input="write to the candidate",
        inputs={"pick": "Ana Lima"},
    )
    assert _review(request, tools=tools).decision == "approve"
    assert tool.seen[0].output == "Dear Ana Lima, ..."
    assert tool.seen[0].input == "write to the candidate"
    assert tool.seen[0].inputs == {"pick": "Ana Lima"}
    failing = _request("Dear Bob", check("tool", "mentions_candidate"), inputs={"pick": "Ana"})
    verdict = _review(failing, tools=tools)
    assert (verdict.decision, verdict.feedback) == ("revise", "the message must name 'Ana'")


def test_a_predicate_taking_only_the_output_gets_only_the_output() -> None:
    tools = ToolRegistry([ShortTool()])
    assert _review(_request("tiny", check("tool", "short")), tools=tools).decision == "approve"
    verdict = _review(_request("much too long", check("tool", "short")), tools=tools)
    assert verdict.feedback == "too long for short"


def test_the_builtin_placeholder_predicate_is_known_next_to_a_registry() -> None:
    tools = ToolRegistry([ShortTool()])
    verdict = _review(_request("Hi {{name}}", check("tool", "no_placeholders")), tools=tools)
    assert verdict.feedback.startswith("the output contains the placeholder '{{name}}'")


@pytest.mark.parametrize(
    ("tool", "message"),
    [
        (NoOutputTool(), "tool 'no_output' takes no 'output' argument"),
        (NeedsMoreTool(), "bad arguments for 'needs_more': threshold: Field required"),
    ],
)
def test_a_predicate_that_cannot_take_the_output_is_a_bad_check(
    tool: TypedTool[Any], message: str
) -> None:
    with pytest.raises(AgentError) as info:
        _review(_request("x", check("tool", tool.name)), tools=ToolRegistry([tool]))
    assert info.value.code == "bad_check"
    assert message in info.value.message


def test_a_predicate_that_times_out_is_a_retryable_error() -> None:
    with pytest.raises(AgentError) as info:
        _review(_request("x", check("tool", "slow")), tools=ToolRegistry([SlowTool()]))
    assert (info.value.code, info.value.retryable) == ("check_timeout", True)


def test_a_crashing_predicate_sends_the_result_back_with_the_reason() -> None:
    verdict = _review(
        _request("x", check("tool", "crashing")), tools=ToolRegistry([CrashingTool()])
    )
    assert (verdict.decision, verdict.feedback) == ("revise", "KeyError: 'boom'")


# -- the placeholder detector -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("Dear [Name],", ["[Name]"]),
        ("Dear [Candidate Name], hi", ["[Candidate Name]"]),
        ("Hello {{first_name}}", ["{{first_name}}"]),
        ("Hello {first_name} and ${x}", ["{first_name}", "${x}"]),
        ("We at <company> and <Your Name>", ["<company>", "<Your Name>"]),
        ("TODO: add salary. XXX FIXME TBD", ["TODO", "XXX", "FIXME", "TBD"]),
        ("Lorem ipsum dolor sit amet", ["Lorem ipsum"]),
        ("Signed: ________", ["________"]),
        ("[Name] and [Name] again", ["[Name]"]),
    ],
)
def test_the_placeholder_detector_finds_template_leftovers(text: str, found: list[str]) -> None:
    assert find_placeholders(text) == found


@pytest.mark.parametrize(
    "text",
    [
        "Dear Ana Lima, your Python and Ray experience fits our platform team.",
        "See [the docs](https://example.com) for details.",
        "Line one<br>line two, <p>para</p>",
        '{"name": "Ana", "skills": {"python": 1}}',
        "5 < 6 and 7 > 2; todo lists are fine in lowercase",
    ],
)
def test_the_placeholder_detector_leaves_real_text_alone(text: str) -> None:
    assert find_placeholders(text) == []


# -- usage ------------------------------------------------------------------------------------


def test_a_model_review_reports_its_usage() -> None:
    verdict = _approving(_request("a fine message"))
    reply = json.dumps({"decision": "approve", "feedback": "good"})
    assert verdict.usage.model_calls == 1
    assert verdict.usage.prompt_tokens == 10  # what the scripted client reports
    assert verdict.usage.completion_tokens == len(reply)
    assert len(verdict.usage.templates) == 1
    assert verdict.usage.templates[0].startswith("reviewer@")


def test_a_rule_review_reports_no_model_use() -> None:
    verdict = _review(_request("", check("min_chars", "3")))
    assert verdict.checked_by == "rule"
    assert verdict.usage.model_calls == 0 and verdict.usage.tokens == 0


def test_only_a_calculation_can_invent_numbers() -> None:
    """A tool's numeric settings (``top: 2``) are not numbers the model made up."""
    call = ToolCall(tool="score", arguments='{"top": 2}', output="ranked", ok=True)
    verdict = _review(_request("ranked", tool="score", tool_calls=(call,)))
    assert (verdict.decision, verdict.feedback) == ("approve", "computed by score")
    calc = ToolCall(tool="calculator", arguments='{"expression": "2 * 7"}', output="14", ok=True)
    verdict = _review(_request("14", tool="calculator", tool_calls=(calc,)))
    assert verdict.decision == "revise" and "uses 2, 7, found neither" in verdict.feedback
