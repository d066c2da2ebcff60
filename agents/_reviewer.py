"""The reviewer: judges a step's result, by rule where the evidence decides, else by model."""

from __future__ import annotations

import re

from agents._model import ModelClient
from agents._prompts import load_prompt
from agents._structured import ask_json, clip, object_schema, text_field
from agents._tools import format_number
from protocols import AgentError, AnyMessage, ReviewRequested, ReviewVerdict, ToolCall

NAME = "reviewer"
DECISIONS = ["approve", "revise", "reject"]
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def numbers_in(text: str) -> set[float]:
    """Every number written in the text (thousands separators ignored)."""
    return {float(n) for n in _NUMBER.findall(text.replace(",", ""))}


def rule_verdict(request: ReviewRequested) -> ReviewVerdict | None:
    """A decision the evidence makes on its own, without asking the model; None if it cannot.

    In order: a failed or empty result is sent back with the failure as feedback; a calculation
    on numbers found neither in the goal nor in earlier results is sent back (the model made them
    up); a result that is a tool's own output is approved (the tool computed it); an answer
    written around a tool's result, or a final answer resting on tool results, is approved when
    it states every computed result, and sent back when it does not.
    """
    result = request.result
    if not result.ok or not result.output.strip():
        reason = result.output.strip() or "the result is empty"
        return _verdict(request, "revise", f"the step did not succeed: {clip(reason, 300)}")
    succeeded = [c for c in result.tool_calls if c.ok]
    if succeeded:
        last = succeeded[-1]
        invented = _ungrounded_numbers(request, last.arguments)
        if invented:
            return _verdict(
                request,
                "revise",
                f"the expression uses {', '.join(invented)}, found neither in the goal nor in "
                "earlier results; compute with the numbers the goal gives",
            )
        if last.output == result.output:
            return _verdict(request, "approve", f"computed by {last.tool}")
        return _states_results(request, [last])
    if request.final and request.evidence:
        return _states_results(request, list(request.evidence))
    return None


def _states_results(request: ReviewRequested, calls: list[ToolCall]) -> ReviewVerdict:
    """Approves an answer that states every computed result; sends it back otherwise."""
    stated = numbers_in(request.result.output)
    missing = [c.output for c in calls if not numbers_in(c.output) <= stated]
    if missing:
        return _verdict(
            request, "revise", f"the answer must state the computed result: {missing[0]}"
        )
    return _verdict(request, "approve", "states the computed result(s)")


def _ungrounded_numbers(request: ReviewRequested, expression: str) -> list[str]:
    known = numbers_in(request.goal)
    for output in request.inputs.values():
        known |= numbers_in(output)
    return [format_number(n) for n in sorted(numbers_in(expression) - known)]


def _verdict(request: ReviewRequested, decision: str, feedback: str) -> ReviewVerdict:
    return ReviewVerdict.model_validate(
        {
            "task_id": request.task_id,
            "step_id": request.step.id,
            "decision": decision,
            "feedback": feedback,
            "checked_by": "rule",
        }
    )


class Reviewer:
    """Answers ``ReviewRequested`` with ``ReviewVerdict``.

    Args:
        model: Chat model for judgement calls.
        max_chars: Longest feedback the model may write.
    """

    name = NAME

    def __init__(self, model: ModelClient, *, max_chars: int = 160):
        self._model = model
        self._max_chars = max_chars

    async def handle(self, message: AnyMessage) -> AnyMessage:
        """Reviews a ``ReviewRequested``; any other message is an error."""
        if not isinstance(message, ReviewRequested):
            raise AgentError(f"{NAME} cannot handle {message.type!r}", code="unhandled_message")
        return rule_verdict(message) or await self._model_verdict(message)

    async def _model_verdict(self, request: ReviewRequested) -> ReviewVerdict:
        schema = object_schema(
            {
                "decision": {"type": "string", "enum": DECISIONS},
                "feedback": text_field(self._max_chars),
            }
        )
        data, _ = await ask_json(
            self._model,
            prompt=load_prompt("reviewer"),
            user=self._user_prompt(request),
            schema=schema,
            name="review",
        )
        decision = data.get("decision")
        if decision not in DECISIONS:
            raise AgentError(
                f"review: decision must be one of {DECISIONS}, got {decision!r}",
                code="bad_model_output",
                retryable=True,
            )
        return ReviewVerdict.model_validate(
            {
                "task_id": request.task_id,
                "step_id": request.step.id,
                "decision": decision,
                "feedback": str(data.get("feedback", "")),
                "checked_by": "model",
            }
        )

    def _user_prompt(self, request: ReviewRequested) -> str:
        what = "final answer" if request.final else "step"
        calls = (*request.evidence, *request.result.tool_calls)
        evidence = [f"{c.tool}({c.arguments}) -> {c.output}" for c in calls if c.ok]
        parts = [
            f"Goal: {request.goal}",
            f"The {what}: {request.step.description}",
            f"Result: {clip(request.result.output, 800)}",
        ]
        if evidence:
            parts.append("Tool evidence: " + "; ".join(evidence))
        return "\n".join(parts)
