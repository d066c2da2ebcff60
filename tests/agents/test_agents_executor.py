"""The executor on the typed toolkit: tool loop, allow-lists, idempotency, usage, budgets."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import Field

from agents import (
    Executor,
    ModelEndpoint,
    ModelRequest,
    Planner,
    ToolArgs,
    ToolContext,
    ToolRegistry,
    ToolResult,
    TroupeSettings,
    TypedTool,
    UsageMeter,
    default_tools,
    high_impact_tools,
    model_client,
    tool_registry,
)
from agents._builtin_tools import CalculatorTool
from agents._context import Part, count_tokens, fit, fit_messages, message_tokens
from agents._model import ChatMessage, FallbackModelClient
from memory import EmbeddedStore, Episode, LocalMemory, RecallQuery
from protocols import (
    AgentError,
    AnyMessage,
    ConfigurationError,
    DeliveryError,
    PlanProposed,
    PlanRequested,
    Step,
    StepAssigned,
    StepResult,
)
from tests.fakes import ScriptedModelClient, UnavailableModelClient, tool_calls


def _version(name: str) -> str:
    """name@hash computed here from the file, independently of agents._prompts."""
    text = resources.files("agents").joinpath("prompts", f"{name}.txt").read_text().strip()
    return f"{name}@{hashlib.sha256(text.encode()).hexdigest()[:12]}"


class NoteArgs(ToolArgs):
    note: str = Field(min_length=1, max_length=100, description="What to note.")


class RecordingTool(TypedTool[NoteArgs]):
    """Records every call it runs, so a test can prove a call never ran."""

    description = "Note something down."
    args_model = NoteArgs

    def __init__(self, name: str = "record", *, impact: str = "low") -> None:
        self.name = name
        self.impact = impact  # type: ignore[assignment]
        self.calls: list[tuple[str, ToolContext]] = []

    async def run(self, args: NoteArgs, ctx: ToolContext) -> ToolResult:
        self.calls.append((args.note, ctx))
        assert ctx.workspace.is_dir()
        return self.result(f"noted {args.note}")


class TransferArgs(ToolArgs):
    amount: int = Field(ge=1, le=1000, description="Amount to transfer.")
    to: str = Field(min_length=1, max_length=20, description="Recipient.")


class LedgerTool(TypedTool[TransferArgs]):
    """A side effect that happens once per idempotency key."""

    name = "ledger"
    description = "Transfer an amount to a recipient."
    args_model = TransferArgs
    impact = "high"
    uses_workspace = False

    def __init__(self) -> None:
        self.entries: dict[str, str] = {}

    async def run(self, args: TransferArgs, ctx: ToolContext) -> ToolResult:
        self.entries.setdefault(ctx.idempotency_key, f"{args.amount} to {args.to}")
        return self.result(self.entries[ctx.idempotency_key])


def ledger_tools() -> list[TypedTool[Any]]:
    """A custom tool factory, loaded by path from the settings."""
    return [LedgerTool(), RecordingTool("notes")]


def not_a_tool() -> str:
    return "calculator"


def _memory() -> LocalMemory:
    return LocalMemory(EmbeddedStore(None))


def _assigned(tool: str, text: str = "", **extra: Any) -> StepAssigned:
    step = Step(id="s1", description="do the step", tool=tool, input=text)
    return StepAssigned(task_id="t1", goal="work out 6 * 7", step=step, **extra)


def _run(executor: Executor, assigned: StepAssigned) -> StepResult:
    async def handle() -> AnyMessage | None:
        try:
            return await executor.handle(assigned)
        finally:  # episodes are written behind the result: let them land before the loop ends
            await executor.flush()

    result = asyncio.run(handle())
    assert isinstance(result, StepResult)
    return result


def _executor(
    model: ScriptedModelClient,
    tmp_path: Path,
    *tools: TypedTool[Any],
    memory: LocalMemory | None = None,
    **options: Any,
) -> Executor:
    registry = ToolRegistry([CalculatorTool(), *tools])
    return Executor(model, memory or _memory(), registry, workspace_root=tmp_path / "ws", **options)


# -- the tool loop ----------------------------------------------------------------------------


def test_tool_loop_calls_the_calculator_then_answers(tmp_path: Path) -> None:
    model = ScriptedModelClient(
        ("step_tools", tool_calls(("calculator", {"expression": "6 * 7"}))),
        ("step_tools", tool_calls(("answer", {"answer": "It is 42."}))),
    )
    memory = _memory()
    executor = _executor(model, tmp_path, RecordingTool(), memory=memory)
    result = _run(executor, _assigned("answer", "multiply"))
    assert (result.ok, result.output) == (True, "It is 42.")
    assert [(c.tool, c.output, c.ok) for c in result.tool_calls] == [("calculator", "42", True)]
    first, second = model.requests
    assert [s["function"]["name"] for s in first.tools] == ["calculator", "record", "answer"]
    assert first.tool_choice == "required" and first.schema is None
    # the call and its result go back to the model as an assistant turn and a tool message
    assistant, tool = second.messages[-2], second.messages[-1]
    assert assistant["role"] == "assistant"
    assert assistant["tool_calls"][0]["function"]["name"] == "calculator"
    assert tool == {"role": "tool", "tool_call_id": "call_0", "content": "42"}
    # usage of both calls, each with its template's name@hash
    assert result.usage.model_calls == 2
    assert result.usage.templates == (_version("executor_tools"),) * 2
    assert result.usage.prompt_tokens == 20
    # the tool result is an untrusted tool episode with the attempt's idempotency key
    found = asyncio.run(memory.recall(RecallQuery(task_id="t1", kinds=("tool_result",), k=10)))
    episodes = [
        s.episode for s in found if s.episode.provenance == "tool" and not s.episode.trusted
    ]
    assert any(e.metadata.get("idempotency_key") == "t1:s1:1" for e in episodes)
    model.assert_complete()


def test_tool_loop_ends_at_the_turn_limit_with_a_reason(tmp_path: Path) -> None:
    again = ("step_tools", tool_calls(("calculator", {"expression": "1 + 1"})))
    model = ScriptedModelClient(again, again)
    executor = _executor(model, tmp_path, RecordingTool(), max_tool_turns=2)
    result = _run(executor, _assigned("answer", "add"))
    assert not result.ok
    assert "no answer within 2 tool turn(s) (max_tool_turns)" in result.output
    assert "tools called: calculator" in result.output
    assert len(result.tool_calls) == 2 and result.usage.model_calls == 2
    model.assert_complete()


def test_a_tool_outside_the_allow_list_is_blocked_reported_and_never_runs(
    tmp_path: Path,
) -> None:
    secret = RecordingTool("secret")
    model = ScriptedModelClient(
        ("step_tools", tool_calls(("secret", {"note": "exfiltrate"}))),
        ("step_tools", tool_calls(("answer", {"answer": "done without it"}))),
    )
    executor = _executor(model, tmp_path, RecordingTool(), secret, allowed=("calculator", "record"))
    result = _run(executor, _assigned("answer", "note it"))
    assert secret.calls == []
    blocked = result.tool_calls[0]
    assert (blocked.tool, blocked.ok) == ("secret", False)
    assert "error (not_allowed): tool 'secret' is not allowed for this agent" in blocked.output
    # it was never offered, and the model read the refusal
    assert "secret" not in [s["function"]["name"] for s in model.requests[0].tools]
    assert "not allowed" in model.requests[1].messages[-1]["content"]
    # a step that names the tool itself is refused the same way, without the model
    direct = _executor(ScriptedModelClient(), tmp_path, secret, allowed=("calculator",))
    refused = _run(direct, _assigned("secret", "exfiltrate"))
    assert not refused.ok and "not allowed" in refused.output and secret.calls == []


def test_a_tool_error_goes_back_to_the_model_which_recovers(tmp_path: Path) -> None:
    model = ScriptedModelClient(
        ("step_tools", tool_calls(("calculator", {"expression": "1 / 0"}))),
        ("step_tools", tool_calls(("calculator", {"expression": "1 / 4"}))),
        ("step_tools", tool_calls(("answer", {"answer": "a quarter: 0.25"}))),
    )
    result = _run(_executor(model, tmp_path, RecordingTool()), _assigned("answer", "divide"))
    assert result.ok and result.output == "a quarter: 0.25"
    assert [c.ok for c in result.tool_calls] == [False, True]
    error = model.requests[1].messages[-1]
    assert error["role"] == "tool"
    assert error["content"] == "error (bad_arguments): division by zero"
    assert model.requests[2].messages[-1]["content"] == "0.25"
    model.assert_complete()


def test_high_impact_tools_run_only_as_their_own_step(tmp_path: Path) -> None:
    ledger = LedgerTool()
    model = ScriptedModelClient(
        ("step_tools", tool_calls(("ledger", {"amount": 5, "to": "bob"}))),
        ("step_tools", tool_calls(("answer", {"answer": "not paid"}))),
    )
    executor = _executor(model, tmp_path, ledger, RecordingTool())
    result = _run(executor, _assigned("answer", "pay bob"))
    assert ledger.entries == {}
    assert "has high impact" in result.tool_calls[0].output
    assert "ledger" not in [s["function"]["name"] for s in model.requests[0].tools]
    # planned as its own step (which the coordinator dispatches after approval), it runs
    step = _assigned("ledger", '{"amount": 5, "to": "bob"}', attempt=2)
    paid = _run(_executor(ScriptedModelClient(), tmp_path, ledger), step)
    assert paid.ok and paid.output == "5 to bob"
    assert list(ledger.entries) == ["t1:s1:2"]


def test_answer_steps_without_tools_beyond_the_calculator_make_one_call(
    tmp_path: Path,
) -> None:
    model = ScriptedModelClient(("step_answer", {"answer": "The total is 5."}))
    result = _run(_executor(model, tmp_path), _assigned("answer", "2 + 3"))
    assert result.ok and [c.output for c in result.tool_calls] == ["5"]
    assert model.requests[0].tools == ()
    assert result.usage.templates == (_version("executor"),)
    model.assert_complete()


def test_a_step_with_an_empty_tool_list_is_one_call_without_tool_specs(tmp_path: Path) -> None:
    record = RecordingTool()
    model = ScriptedModelClient(("step_answer", {"answer": "Dear Ana, ..."}))
    step = Step(id="s1", description="write", tool="answer", input="write to Ana", tools=())
    result = _run(
        _executor(model, tmp_path, record), StepAssigned(task_id="t1", goal="g", step=step)
    )
    assert (result.ok, result.output) == (True, "Dear Ana, ...")
    assert model.requests[0].tools == () and record.calls == []
    assert result.usage.templates == (_version("executor"),)
    model.assert_complete()


def test_a_step_tool_list_narrows_what_the_model_is_offered(tmp_path: Path) -> None:
    model = ScriptedModelClient(
        ("step_tools", tool_calls(("record", {"note": "x"}))),
        ("step_tools", tool_calls(("answer", {"answer": "noted"}))),
    )
    step = Step(id="s1", description="note", tool="answer", input="note x", tools=("record",))
    executor = _executor(model, tmp_path, RecordingTool(), RecordingTool("other"))
    result = _run(executor, StepAssigned(task_id="t1", goal="g", step=step))
    assert result.ok and result.output == "noted"
    assert [s["function"]["name"] for s in model.requests[0].tools] == ["record", "answer"]
    # a tool the step does not list is refused even if the model calls it anyway
    blocked = ScriptedModelClient(
        ("step_tools", tool_calls(("other", {"note": "y"}))),
        ("step_tools", tool_calls(("answer", {"answer": "done"}))),
    )
    other = RecordingTool("other")
    result = _run(
        _executor(blocked, tmp_path, RecordingTool(), other),
        StepAssigned(task_id="t1", goal="g", step=step),
    )
    assert other.calls == [] and not result.tool_calls[0].ok
    model.assert_complete()
    blocked.assert_complete()


# -- tool steps, idempotency, workspace ---------------------------------------------------------


def test_the_idempotency_key_and_workspace_reach_the_tool(tmp_path: Path) -> None:
    record = RecordingTool()
    executor = _executor(ScriptedModelClient(), tmp_path, record)
    step = _assigned("record", "buy milk", attempt=3, idempotency_key="t1:s1:3")
    result = _run(executor, step)
    assert result.ok and result.output == "noted buy milk"
    [(note, ctx)] = record.calls
    assert (note, ctx.idempotency_key, ctx.attempt) == ("buy milk", "t1:s1:3", 3)
    assert ctx.workspace == (tmp_path / "ws" / "t1").resolve() and ctx.workspace.is_dir()
    assert result.tool_calls[0].arguments == '{"note": "buy milk"}'
    assert result.usage.model_calls == 0
    # a key that is not task:step:attempt is refused before anything runs
    wrong = _assigned("record", "again", attempt=3, idempotency_key="t1:s1:2")
    with pytest.raises(AgentError, match="idempotency key 't1:s1:2'"):
        asyncio.run(executor.handle(wrong))
    assert len(record.calls) == 1


def test_a_redelivered_attempt_does_its_side_effect_once(tmp_path: Path) -> None:
    ledger = LedgerTool()
    executor = _executor(ScriptedModelClient(), tmp_path, ledger)
    first = _assigned("ledger", '{"amount": 5, "to": "bob"}', idempotency_key="t1:s1:1")
    resent = _assigned("ledger", '{"amount": 7, "to": "eve"}', idempotency_key="t1:s1:1")
    assert _run(executor, first).output == _run(executor, resent).output == "5 to bob"
    assert ledger.entries == {"t1:s1:1": "5 to bob"}


def test_input_that_does_not_fit_asks_the_model_once_by_function_calling(
    tmp_path: Path,
) -> None:
    ledger = LedgerTool()
    model = ScriptedModelClient(
        ("tool_arguments", tool_calls(("ledger", {"amount": 3, "to": "ann"}))),
    )
    result = _run(_executor(model, tmp_path, ledger), _assigned("ledger", "pay ann three"))
    assert result.ok and result.output == "3 to ann"
    request = model.requests[0]
    assert request.tool_choice == {"type": "function", "function": {"name": "ledger"}}
    assert [s["function"]["name"] for s in request.tools] == ["ledger"]
    assert result.usage.templates == (_version("arguments"),)
    model.assert_complete()


def test_a_calculator_revision_asks_for_a_new_expression(tmp_path: Path) -> None:
    model = ScriptedModelClient(("expression", {"expression": "6 * 7"}))
    step = _assigned("calculator", "6 * 8", feedback="use the goal's numbers", attempt=2)
    result = _run(_executor(model, tmp_path), step)
    assert result.ok and result.output == "42"
    assert "Reviewer feedback on your last attempt: use the goal" in str(
        model.requests[0].messages[-1]["content"]
    )
    assert result.usage.templates == (_version("expression"),)


# -- usage and templates ------------------------------------------------------------------------


def test_the_planner_reports_usage_with_template_hashes() -> None:
    bad = {"steps": [{"description": "a", "tool": "nope", "input": "", "depends_on": []}]}
    good = {"steps": [{"description": "a", "tool": "answer", "input": "", "depends_on": []}]}
    model = ScriptedModelClient(("plan", bad), ("plan", good))
    planner = Planner(model, _memory(), default_tools(), max_attempts=2)
    proposed = asyncio.run(planner.handle(PlanRequested(task_id="t1", goal="say hi")))
    assert isinstance(proposed, PlanProposed)
    assert proposed.usage.model_calls == 2
    assert proposed.usage.templates == (_version("planner"),) * 2
    assert proposed.usage.completion_tokens == sum(len(json.dumps(p)) for p in (bad, good))


def test_usage_meter_counts_only_calls_that_completed() -> None:
    meter = UsageMeter(ScriptedModelClient("hi"))
    request = ModelRequest(messages=({"role": "user", "content": "x"},), max_tokens=5)
    asyncio.run(meter.complete(request))
    with pytest.raises(AssertionError, match="unexpected model call"):
        asyncio.run(meter.complete(request))
    assert (meter.usage.model_calls, meter.usage.templates) == (1, ())


# -- model routing with fallbacks ---------------------------------------------------------------


def _ask(client: Any) -> str:
    request = ModelRequest(messages=({"role": "user", "content": "hi"},), max_tokens=8)
    return str(asyncio.run(client.complete(request)).content)


def test_fallbacks_answer_when_the_primary_is_down() -> None:
    endpoint = ModelEndpoint(
        model="primary",
        client="tests.fakes:unavailable_client",
        fallbacks=(ModelEndpoint(model="backup", client="tests.fakes:echo_client"),),
    )
    assert json.loads(_ask(model_client(endpoint))) == {"answer": "backup says hi"}


def test_a_real_transport_failure_falls_back(tmp_path: Path) -> None:
    # nothing listens on port 9: the openai client fails to connect, tenacity gives up
    endpoint = ModelEndpoint(
        base_url="http://127.0.0.1:9/v1",
        max_attempts=1,
        timeout_s=5,
        fallbacks=(ModelEndpoint(model="backup", client="tests.fakes:echo_client"),),
    )
    assert json.loads(_ask(model_client(endpoint))) == {"answer": "backup says hi"}


def test_fallbacks_stop_at_errors_another_endpoint_would_not_fix() -> None:
    rejected, spare = UnavailableModelClient("model_rejected"), UnavailableModelClient()
    chain = FallbackModelClient([("a", rejected), ("b", spare)])
    with pytest.raises(AgentError, match="model_rejected"):
        _ask(chain)
    assert spare.calls == 0
    down = FallbackModelClient([("a", UnavailableModelClient()), ("b", UnavailableModelClient())])
    with pytest.raises(AgentError, match=r"every model endpoint failed \(2\): a: .*; b: "):
        _ask(down)


def test_a_fallback_without_a_url_uses_its_primarys() -> None:
    endpoint = ModelEndpoint(
        base_url="http://127.0.0.1:9/v1", fallbacks=(ModelEndpoint(model="other"),)
    )
    client = model_client(endpoint)
    assert isinstance(client, FallbackModelClient)
    assert [label for label, _ in client._clients] == [
        "smollm2-135m at http://127.0.0.1:9/v1",
        "other at http://127.0.0.1:9/v1",
    ]


# -- custom tools from settings -----------------------------------------------------------------


def test_custom_tools_load_from_module_callable_paths() -> None:
    settings = TroupeSettings.model_validate(
        {"agents": {"tools": {"custom": ["tests.agents.test_agents_executor:ledger_tools"]}}}
    )
    assert tool_registry(settings).names() == ["calculator", "ledger", "notes"]
    assert high_impact_tools(settings) == frozenset({"ledger"})
    assert high_impact_tools(TroupeSettings()) == frozenset()


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("tests.agents.no_such_module:tools", "cannot be loaded"),
        ("tests.agents.test_agents_executor:missing", "cannot be loaded"),
        ("tests.agents.test_agents_executor:not_a_tool", "returned str"),
    ],
)
def test_a_bad_custom_tool_path_is_a_clear_error(path: str, message: str) -> None:
    settings = TroupeSettings.model_validate({"agents": {"tools": {"custom": [path]}}})
    with pytest.raises(ConfigurationError, match=message) as info:
        tool_registry(settings)
    assert path in info.value.message


def test_custom_tool_paths_and_builtin_names_are_checked_when_loaded(tmp_path: Path) -> None:
    bad = tmp_path / "troupe.yaml"
    bad.write_text("agents:\n  tools:\n    custom: ['not a path']\n")
    with pytest.raises(ConfigurationError, match="module:callable"):
        TroupeSettings.load(bad)
    bad.write_text("agents:\n  tools:\n    builtin: [shell]\n")
    with pytest.raises(ConfigurationError, match="builtin"):
        TroupeSettings.load(bad)


# -- the context budget -------------------------------------------------------------------------


def test_fit_clips_the_longest_flexible_part_first_and_never_exceeds() -> None:
    parts = [
        Part("Goal: add things", required=True),
        Part("Result of s1: " + "a" * 2000),
        Part("Result of s2: short"),
        Part("Step: add", required=True),
    ]
    text = fit(parts, 100)
    assert count_tokens(text) <= 100
    assert text.startswith("Goal: add things\nResult of s1: aaa")
    assert "chars, clipped]" in text and "Result of s2: short" in text
    assert text.endswith("Step: add")
    # under a tight budget whole parts go, oldest first, and a note says so
    tight = fit(parts, 28)
    assert count_tokens(tight) <= 28 and "left out to fit the context" in tight
    assert "aaa" not in tight  # the oldest flexible part went first
    # nothing to clip: unchanged
    assert fit(parts[:1], 100) == "Goal: add things"


@given(st.text(alphabet=st.characters(max_codepoint=0x3000), max_size=80))
def test_the_token_count_of_ascii_text_matches_its_definition(text: str) -> None:
    # ASCII text is counted in C; it must agree with the character-by-character definition
    # (ASCII control characters and \x1c-\x1f count as spaces for str.isspace).
    single = sum(1 for c in text if not (c.isalpha() or c.isspace()))
    assert count_tokens(text) == single + -(-(len(text) - single) // 4)
    ascii_only = text.encode("ascii", "ignore").decode()
    single = sum(1 for c in ascii_only if not (c.isalpha() or c.isspace()))
    assert count_tokens(ascii_only) == single + -(-(len(ascii_only) - single) // 4)


def test_the_token_estimate_does_not_undercount_the_bundled_tokenizer() -> None:
    """JSON (tool specs, earlier steps' outputs) and numbers tokenize far worse than prose;
    the estimate must still be an upper bound, or a fitted prompt overflows the context."""
    from llama_cpp import Llama

    from serve._engine import bundled_model_path

    vocab = Llama(str(bundled_model_path()), vocab_only=True, verbose=False)
    ranking = [
        {"name": "Ana Lima", "score": 0.8123, "skills": ["python", "ray"], "must_have": True},
        {"name": "Ben Okafor", "score": 0.7731, "skills": ["python", "kubernetes"]},
    ]
    slots = {"slots": [{"candidate": "Ana Lima", "start": "2026-12-01T10:00"}]}
    texts = {
        "tool specs": json.dumps(tool_registry(TroupeSettings()).function_specs()),
        "scores": json.dumps({"ranking": ranking}),
        "dates": json.dumps(slots, indent=2),
        "prose": "Kestrel keeps the last 14 daily snapshots and 8 weekly ones; older snapshots "
        "are pruned every night after the backup finishes.",
    }
    undercounted_by_chars_over_4 = []
    for name, text in texts.items():
        actual = len(vocab.tokenize(text.encode(), add_bos=False))
        assert actual <= count_tokens(text), (name, actual, count_tokens(text))
        assert count_tokens(text) <= 2 * actual, name  # conservative, not useless
        if -(-len(text) // 4) < actual:
            undercounted_by_chars_over_4.append(name)
    # the old estimate (chars / 4) undercounted these
    assert {"scores", "dates"} <= set(undercounted_by_chars_over_4)


def test_fit_messages_shortens_old_tool_results_within_the_budget() -> None:
    messages: list[ChatMessage] = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "u"},
        {"role": "tool", "tool_call_id": "1", "content": "x" * 3000},
        {"role": "tool", "tool_call_id": "2", "content": "y" * 400},
    ]
    fitted = fit_messages(messages, 300)
    assert message_tokens(fitted) <= 300
    assert fitted[2]["content"].endswith("[3000 chars, clipped]")
    assert fitted[3]["content"] == "y" * 400 and messages[2]["content"] == "x" * 3000


def test_the_executor_prompt_stays_within_its_context_budget(tmp_path: Path) -> None:
    model = ScriptedModelClient(("step_answer", {"answer": "ok"}))
    executor = _executor(model, tmp_path, context_tokens=300, max_input_chars=5000)
    inputs = {f"s{i}": f"output {i} " + "z" * 3000 for i in range(1, 4)}
    step = Step(id="s4", description="sum up", tool="answer", depends_on=("s1", "s2", "s3"))
    assigned = StepAssigned(task_id="t1", goal="sum up the outputs", step=step, inputs=inputs)
    assert _run(executor, assigned).ok
    messages = model.requests[0].messages
    assert message_tokens(messages) <= 300
    user = messages[-1]["content"]
    assert "Goal: sum up the outputs" in user and "Step: sum up" in user
    assert "clipped" in user or "left out" in user


# -- against the bundled model ------------------------------------------------------------------


@pytest.mark.ray
@pytest.mark.e2e
def test_function_calling_round_trips_through_the_serve_app(
    serve_base_url: str, tmp_path: Path
) -> None:
    """The wire format of the loop (tools, tool_choice, tool calls, tool messages) is accepted
    by the real Serve app, and forced calls come back with arguments that parse."""
    client = model_client(ModelEndpoint(base_url=serve_base_url, timeout_s=120))
    executor = Executor(
        client,
        _memory(),
        ToolRegistry([CalculatorTool(), RecordingTool(), LedgerTool()]),
        workspace_root=tmp_path,
        max_tool_turns=2,
        tool_reply_tokens=64,
        max_chars=60,
    )

    async def both() -> tuple[Any, Any]:  # one event loop: the openai client is bound to it
        return (
            await executor.handle(_assigned("answer", "6 * 7")),
            await executor.handle(_assigned("ledger", "pay ann three")),
        )

    looped, forced = asyncio.run(both())
    assert isinstance(looped, StepResult) and isinstance(forced, StepResult)
    assert looped.ok or "(max_tool_turns)" in looped.output
    assert 1 <= looped.usage.model_calls <= 2 and looped.usage.prompt_tokens > 0
    assert set(looped.usage.templates) == {_version("executor_tools")}
    assert forced.usage.templates == (_version("arguments"),)
    assert set(json.loads(forced.tool_calls[-1].arguments)) == {"amount", "to"}


# -- memory writes behind the result ----------------------------------------------------------


class _SlowMemory:
    """Memory whose writes wait for a gate (or fail), so a test sees what runs behind a step."""

    def __init__(self, *, fail: bool = False) -> None:
        self.inner = _memory()
        self.gate = asyncio.Event()
        self.writes: list[int] = []
        self.fail = fail

    async def remember(self, episodes: Sequence[Episode], **kwargs: Any) -> int:
        await self.gate.wait()
        if self.fail:
            raise DeliveryError("memory actor unavailable", retryable=True)
        self.writes.append(len(episodes))
        return await self.inner.remember(episodes, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.mark.parametrize(
    ("window_s", "writes"),
    [
        (0.0, [2, 4]),  # the first write takes s0; s1 and s2 queue meanwhile: one write
        (5.0, [6]),  # all three answered within the window: one write (flush cuts it short)
    ],
)
def test_episodes_are_written_behind_the_result_in_batches(
    tmp_path: Path, window_s: float, writes: list[int]
) -> None:
    memory = _SlowMemory()
    model = ScriptedModelClient(*[("step_answer", {"answer": f"answer {i}"}) for i in range(3)])
    executor = _executor(model, tmp_path, memory=memory, write_window_s=window_s)  # type: ignore[arg-type]

    async def scenario() -> None:
        for i in range(3):  # three steps answer while memory is stuck
            step = Step(id=f"s{i}", description="say it", tool="answer", input="", tools=())
            result = await executor.handle(StepAssigned(task_id="t1", goal="g", step=step))
            assert isinstance(result, StepResult) and result.output == f"answer {i}"
        assert memory.writes == []
        memory.gate.set()
        await executor.flush()
        assert memory.writes == writes
        assert executor.write_failures == 0

    asyncio.run(scenario())
    found = asyncio.run(memory.inner.recall(RecallQuery(task_id="t1", kinds=("observation",))))
    assert sorted(s.episode.content for s in found) == ["answer 0", "answer 1", "answer 2"]


def test_flush_writes_at_once_without_waiting_for_the_window(tmp_path: Path) -> None:
    memory = _SlowMemory()
    memory.gate.set()
    model = ScriptedModelClient(("step_answer", {"answer": "fine"}))
    executor = _executor(model, tmp_path, memory=memory, write_window_s=30.0)  # type: ignore[arg-type]

    async def scenario() -> float:
        step = Step(id="s1", description="say it", tool="answer", input="", tools=())
        await executor.handle(StepAssigned(task_id="t1", goal="g", step=step))
        await asyncio.sleep(0.05)
        assert memory.writes == []  # gathering: the window is 30 s
        started = time.monotonic()
        await executor.flush()
        return time.monotonic() - started

    assert asyncio.run(scenario()) < 5.0
    assert memory.writes == [2]


def test_a_memory_outage_does_not_fail_the_step_and_is_counted(tmp_path: Path) -> None:
    memory = _SlowMemory(fail=True)
    memory.gate.set()
    model = ScriptedModelClient(("step_answer", {"answer": "fine"}))
    executor = _executor(model, tmp_path, memory=memory)  # type: ignore[arg-type]
    step = Step(id="s1", description="say it", tool="answer", input="", tools=())
    result = _run(executor, StepAssigned(task_id="t1", goal="g", step=step))
    assert (result.ok, result.output) == (True, "fine")
    assert executor.write_failures == 1
