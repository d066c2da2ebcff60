"""The executor: carries out one step with its tool, and records what it did in memory."""

from __future__ import annotations

from agents._model import ModelClient
from agents._prompts import load_prompt
from agents._structured import ask_json, clip, object_schema, text_field
from agents._tools import MODEL_TOOL, Calculator, Tool, ToolRegistry
from memory import Episode, EpisodicMemory
from protocols import AgentError, AnyMessage, StepAssigned, StepResult, ToolCall

NAME = "executor"


class Executor:
    """Answers ``StepAssigned`` with ``StepResult``.

    A step's tool decides how it runs: ``answer`` asks the model; ``calculator`` computes the
    step's input, and when that input is not an expression it asks the model for one (once).
    A tool failure is a result with ``ok=False`` and the reason, for the reviewer to judge.

    Args:
        model: Chat model for steps the model carries out.
        memory: Episodic memory that receives an action and a tool-result episode per step.
        tools: The tools this executor is allowed to run.
        name: This executor's name (several share a pool).
        namespace: Memory namespace.
        max_chars: Longest free-text answer the model may give.
        max_input_chars: Longest earlier-step output quoted into the prompt.
    """

    def __init__(
        self,
        model: ModelClient,
        memory: EpisodicMemory,
        tools: ToolRegistry,
        *,
        name: str = NAME,
        namespace: str = "default",
        max_chars: int = 240,
        max_input_chars: int = 600,
    ):
        self.name = name
        self._model = model
        self._memory = memory
        self._tools = tools
        self._namespace = namespace
        self._max_chars = max_chars
        self._max_input_chars = max_input_chars

    async def handle(self, message: AnyMessage) -> AnyMessage:
        """Runs a ``StepAssigned``; any other message is an error."""
        if not isinstance(message, StepAssigned):
            raise AgentError(f"{NAME} cannot handle {message.type!r}", code="unhandled_message")
        if message.step.tool == MODEL_TOOL:
            result = await self._answer(message)
        else:
            result = await self._run_tool(message)
        await self._record(message, result)
        return result

    async def _answer(self, assigned: StepAssigned) -> StepResult:
        evidence = await self._arithmetic_evidence(assigned)
        facts = "".join(f"\nCalculator: {c.arguments} = {c.output}" for c in evidence)
        data, _ = await ask_json(
            self._model,
            prompt=load_prompt("final" if assigned.step.id == "final" else "executor"),
            user=self._context(assigned) + facts,
            schema=object_schema({"answer": text_field(self._max_chars, min_chars=1)}),
            name="step_answer",
        )
        answer = str(data.get("answer", "")).strip()
        return StepResult(
            task_id=assigned.task_id,
            step_id=assigned.step.id,
            output=answer,
            ok=bool(answer),
            tool_calls=evidence,
            attempt=assigned.attempt,
        )

    async def _arithmetic_evidence(self, assigned: StepAssigned) -> tuple[ToolCall, ...]:
        """The calculator's value of the step's input, when that input is arithmetic.

        Small models get sums wrong; an answer step whose input is an expression gets the
        computed value in its prompt, and the call goes into the result as evidence that the
        reviewer checks the answer against. Input that is not arithmetic adds nothing.
        """
        if not assigned.step.input or "calculator" not in self._tools.names():
            return ()
        call = await _call(self._tools.get("calculator"), assigned.step.input)
        return (call,) if call.ok else ()

    async def _run_tool(self, assigned: StepAssigned) -> StepResult:
        tool = self._tools.get(assigned.step.tool)
        computes = isinstance(tool, Calculator)
        argument = assigned.step.input
        if assigned.feedback and computes:
            # The reviewer refused the last computation: the planned input is what was wrong.
            argument = await self._ask_expression(assigned, note=None)
        calls = [await _call(tool, argument)]
        if not calls[-1].ok and computes and not assigned.feedback:
            note = f"The input {argument!r} failed: {calls[-1].output}"
            calls.append(await _call(tool, await self._ask_expression(assigned, note=note)))
        last = calls[-1]
        if not last.ok:
            return self._failed(assigned, calls, last.output)
        return StepResult(
            task_id=assigned.task_id,
            step_id=assigned.step.id,
            output=last.output,
            ok=True,
            tool_calls=tuple(calls),
            attempt=assigned.attempt,
        )

    async def _ask_expression(self, assigned: StepAssigned, *, note: str | None) -> str:
        user = self._context(assigned) + (f"\n{note}" if note else "")
        data, _ = await ask_json(
            self._model,
            prompt=load_prompt("expression"),
            user=user,
            schema=object_schema({"expression": text_field(80, min_chars=1)}),
            name="expression",
        )
        return str(data.get("expression", ""))

    def _failed(self, assigned: StepAssigned, calls: list[ToolCall], reason: str) -> StepResult:
        return StepResult(
            task_id=assigned.task_id,
            step_id=assigned.step.id,
            output=f"{assigned.step.tool} failed: {reason}",
            ok=False,
            tool_calls=tuple(calls),
            attempt=assigned.attempt,
        )

    def _context(self, assigned: StepAssigned) -> str:
        parts = [f"Goal: {assigned.goal}", f"Step: {assigned.step.description}"]
        if assigned.step.input:
            parts.append(f"Step input: {assigned.step.input}")
        for step_id, output in assigned.inputs.items():
            parts.append(f"Result of {step_id}: {clip(output, self._max_input_chars)}")
        if assigned.feedback:
            parts.append(f"Reviewer feedback on your last attempt: {clip(assigned.feedback, 400)}")
        return "\n".join(parts)

    async def _record(self, assigned: StepAssigned, result: StepResult) -> None:
        """One action episode (what was asked) and one result episode (what came of it)."""
        common = {
            "agent": self.name,
            "namespace": self._namespace,
            "task_id": assigned.task_id,
            "step_id": assigned.step.id,
            "key": f"attempt-{assigned.attempt}",
        }
        action = Episode.create(
            kind="action",
            content=clip(f"{assigned.step.tool}: {assigned.step.description}", 2000),
            trusted=True,
            **common,  # type: ignore[arg-type]
        )
        outcome = Episode.create(
            kind="tool_result" if result.tool_calls else "observation",
            content=result.output or "(empty)",
            provenance="tool" if result.tool_calls else "agent",
            importance=0.5 if result.ok else 0.7,
            tags=("ok",) if result.ok else ("failed",),
            **common,  # type: ignore[arg-type]
        )
        await self._memory.remember([action, outcome])


async def _call(tool: Tool, argument: str) -> ToolCall:
    """Runs a tool; a refusal (bad argument) is a failed call, kept as evidence."""
    try:
        output = await tool.run(argument)
    except AgentError as exc:
        return ToolCall(tool=tool.name, arguments=argument, output=exc.message, ok=False)
    return ToolCall(tool=tool.name, arguments=argument, output=output, ok=True)
