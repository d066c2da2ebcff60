"""The reviewer: judges a step's result by its declared checks, by rule where the evidence
decides, else by model."""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import Field

from agents._model import ModelClient, UsageMeter, schema_token_bound
from agents._prompts import load_prompt
from agents._structured import ask_json, clip, object_schema, text_field
from agents._toolkit import (
    ToolArgs,
    ToolContext,
    ToolPolicy,
    ToolRegistry,
    ToolResult,
    TypedTool,
    workspace_path,
)
from agents._tools import format_number
from protocols import (
    AgentError,
    AnyMessage,
    ReviewRequested,
    ReviewVerdict,
    StepCheck,
    ToolCall,
)

NAME = "reviewer"
CALCULATOR = "calculator"
DECISIONS = ["approve", "revise", "reject"]
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def numbers_in(text: str) -> set[float]:
    """Every number written in the text (thousands separators ignored)."""
    return {float(n) for n in _NUMBER.findall(text.replace(",", ""))}


# -- placeholders ------------------------------------------------------------------------------

_HTML_TAG = re.compile(
    r"(?i)^(?:a|b|i|p|u|br|hr|em|tr|td|th|ul|ol|li|dl|dt|dd|div|span|code|pre|strong|small|"
    r"sub|sup|h[1-6]|html|head|body|table|thead|tbody|img|blockquote)$"
)
_PLACEHOLDERS = (
    re.compile(r"\{\{[^{}\n]{0,60}\}\}"),  # {{name}}
    re.compile(r"\$\{[^{}\n]{0,60}\}"),  # ${name}
    re.compile(r"(?<![{$])\{[A-Za-z_][\w .-]{0,40}\}"),  # {name}; JSON objects start with a quote
    re.compile(r"\[[A-Za-z][\w .,/'&-]{0,40}\](?!\()"),  # [Name]; not a Markdown link
    re.compile(r"</?([A-Za-z][\w .-]{0,40})>"),  # <company>; not an HTML tag
    re.compile(r"\b(?:TODO|TBD|FIXME|XXX+)\b"),
    re.compile(r"(?i)\blorem ipsum\b"),
    re.compile(r"_{4,}"),  # Dear ____,
)


def find_placeholders(text: str) -> list[str]:
    """Template placeholders left in a text, in order of appearance, each once.

    Finds ``[Name]``, ``{{x}}``, ``{x}``, ``${x}``, ``<company>``, ``TODO``/``TBD``/``FIXME``/
    ``XXX``, ``Lorem ipsum`` and blanks (``____``). Markdown links and HTML tags are not
    placeholders.
    """
    found: list[tuple[int, str]] = []
    for pattern in _PLACEHOLDERS:
        for match in pattern.finditer(text):
            inner = match.group(1) if pattern.groups else None
            if inner is not None and _HTML_TAG.match(inner):
                continue
            found.append((match.start(), match.group(0)))
    seen: dict[str, None] = {}
    for _, token in sorted(found):
        seen.setdefault(token, None)
    return list(seen)


class CheckArgs(ToolArgs):
    """Arguments of a predicate tool used by a ``tool`` check.

    A predicate's argument model needs ``output``; the reviewer also fills ``input`` and
    ``inputs`` when the model declares them.
    """

    output: str = Field(description="The step's output under review.")
    input: str = Field(default="", description="The step's input.")
    inputs: dict[str, str] = Field(
        default_factory=dict, description="Outputs of the steps this one depended on, by step id."
    )


class NoPlaceholdersTool(TypedTool[CheckArgs]):
    """Predicate: the output holds no template placeholder (see ``find_placeholders``)."""

    name = "no_placeholders"
    description = "Succeeds when the text holds no placeholder such as [Name], {{x}} or TODO."
    args_model = CheckArgs
    timeout_s = 5.0

    async def run(self, args: CheckArgs, ctx: ToolContext) -> ToolResult:
        """ok when none is found; otherwise names them."""
        found = find_placeholders(args.output)
        if not found:
            return self.result("no placeholders")
        listed = ", ".join(repr(p) for p in found[:5])
        noun = "placeholder" if len(found) == 1 else "placeholders"
        return self.fail(f"the output contains the {noun} {listed}; write the real text instead")


def check_tools() -> list[TypedTool[Any]]:
    """Predicates every reviewer knows, whatever registry it is given."""
    return [NoPlaceholdersTool()]


# -- checks ------------------------------------------------------------------------------------


def _bad_check(index: int, check: StepCheck, why: str) -> AgentError:
    return AgentError(
        f"check {index} ({check.kind} {clip(check.value, 80)!r}) is invalid: {why}",
        code="bad_check",
    )


def _count(index: int, check: StepCheck) -> int:
    try:
        number = int(check.value.strip())
    except ValueError:
        raise _bad_check(index, check, "value must be a whole number of characters") from None
    if number < 0:
        raise _bad_check(index, check, "value must not be negative")
    return number


TextCheck = Callable[[str], str | None]
"""Returns None when the output passes, else what is wrong."""


def _text_check(index: int, check: StepCheck) -> TextCheck:
    """The check as a function of the output; raises ``bad_check`` on a bad definition."""
    kind = check.kind
    if kind in ("min_chars", "max_chars"):
        return _length_check(kind, _count(index, check))
    if kind in ("contains", "not_contains"):
        needle = check.value.strip()
        if not needle:
            raise _bad_check(index, check, "value must be the text to look for")
        return _substring_check(needle, present=kind == "contains")
    if kind == "regex":
        try:
            pattern = re.compile(check.value)
        except re.error as exc:
            raise _bad_check(index, check, f"not a regular expression ({exc})") from None

        def matches(out: str) -> str | None:
            return None if pattern.search(out) else f"the output does not match {check.value}"

        return matches
    if kind == "json_schema":
        return _schema_check(index, check)
    raise AssertionError(f"unreachable: {kind} is handled by the caller")


def _length_check(kind: str, limit: int) -> TextCheck:
    def length(out: str) -> str | None:
        if kind == "min_chars" and len(out) < limit:
            return f"the output is {len(out)} characters, the minimum is {limit}"
        if kind == "max_chars" and len(out) > limit:
            return f"the output is {len(out)} characters, the limit is {limit}"
        return None

    return length


def _substring_check(needle: str, *, present: bool) -> TextCheck:
    def substring(out: str) -> str | None:
        found = needle.lower() in out.lower()
        if present and not found:
            return f"the output must contain {needle!r}"
        if not present and found:
            return f"the output contains {needle!r}, which it must not"
        return None

    return substring


def _schema_check(index: int, check: StepCheck) -> TextCheck:
    import jsonschema  # type: ignore[import-untyped]  # ships with ray; no stubs here

    try:
        schema = json.loads(check.value)
    except json.JSONDecodeError as exc:
        raise _bad_check(index, check, f"value is not JSON ({exc.msg} at {exc.pos})") from None
    if not isinstance(schema, dict | bool):
        raise _bad_check(index, check, "value must be a JSON Schema object")
    cls = jsonschema.validators.validator_for(schema)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise _bad_check(index, check, f"not a valid JSON Schema: {exc.message}") from None
    validator = cls(schema)

    def run(out: str) -> str | None:
        try:
            value = json.loads(out)
        except json.JSONDecodeError as exc:
            return f"the output is not JSON ({exc.msg} at character {exc.pos})"
        errors = sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
        if not errors:
            return None
        shown = [f"at {_json_path(e.absolute_path)}: {e.message}" for e in errors[:3]]
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        return "the output does not match the JSON schema: " + "; ".join(shown) + more

    return run


def _json_path(parts: Any) -> str:
    path = "$"
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


class CheckRunner:
    """Runs a step's declared checks on its output, in order; the first failure decides.

    Args:
        tools: Predicate tools for ``tool`` checks (looked up first); the built-in predicates
            (``no_placeholders``) are always known.
        workspace_root: Root of the per-task workspaces (``agents.workspace_dir``); a
            predicate tool gets its task's directory there, not created (predicates read
            only). Default: the temporary directory.
    """

    def __init__(self, tools: ToolRegistry | None = None, *, workspace_root: Path | None = None):
        self._tools = tools
        self._builtin = ToolRegistry(check_tools())
        self._workspace_root = workspace_root or Path(tempfile.gettempdir())

    def _registry(self, name: str) -> ToolRegistry | None:
        if self._tools is not None and self._tools.get(name) is not None:
            return self._tools
        return self._builtin if self._builtin.get(name) is not None else None

    def _known(self) -> list[str]:
        names = set(self._builtin.names())
        if self._tools is not None:
            names |= set(self._tools.names())
        return sorted(names)

    def validate(self, checks: tuple[StepCheck, ...]) -> list[TextCheck | str]:
        """Each check compiled (a text check, or a predicate tool's name).

        Raises:
            AgentError: ``bad_check`` naming the first check that cannot run.
        """
        compiled: list[TextCheck | str] = []
        for index, check in enumerate(checks):
            if check.kind != "tool":
                compiled.append(_text_check(index, check))
                continue
            name = check.value.strip()
            registry = self._registry(name)
            if registry is None:
                known = ", ".join(self._known())
                raise _bad_check(index, check, f"no predicate tool {name!r}; known: {known}")
            tool = registry.get(name)
            assert tool is not None
            if "output" not in tool.args_model.model_fields:
                raise _bad_check(
                    index, check, f"tool {name!r} takes no 'output' argument, so it cannot check"
                )
            compiled.append(name)
        return compiled

    async def first_failure(self, request: ReviewRequested) -> str | None:
        """Feedback from the first failing check, or None when every check passes.

        Raises:
            AgentError: ``bad_check`` when a check is defined wrongly; ``check_timeout``
                (retryable) when a predicate tool did not answer in time.
        """
        checks = request.step.checks
        output = request.result.output.strip()
        for index, compiled in enumerate(self.validate(checks)):
            check = checks[index]
            if isinstance(compiled, str):
                problem = await self._predicate(index, check, compiled, request, output)
            else:
                problem = compiled(output)
            if problem is not None:
                return check.message or problem
        return None

    async def _predicate(
        self, index: int, check: StepCheck, name: str, request: ReviewRequested, output: str
    ) -> str | None:
        registry = self._registry(name)
        tool = registry.get(name) if registry is not None else None
        assert registry is not None and tool is not None  # validate() checked it
        fields = tool.args_model.model_fields
        arguments: dict[str, Any] = {"output": output}
        if "input" in fields:
            arguments["input"] = request.step.input
        if "inputs" in fields:
            arguments["inputs"] = dict(request.inputs)
        ctx = ToolContext(
            task_id=request.task_id,
            step_id=request.step.id,
            attempt=request.result.attempt,
            workspace=workspace_path(self._workspace_root, request.task_id),
            agent=NAME,
        )
        result = await registry.call(name, arguments, ctx, policy=ToolPolicy([name]))
        if result.ok:
            return None
        if result.code == "timeout":
            raise AgentError(
                f"check {index} (tool {name!r}) gave no answer: {result.error}",
                code="check_timeout",
                retryable=True,
            )
        if result.code in ("bad_arguments", "unknown_tool", "not_allowed", "disabled"):
            raise _bad_check(index, check, result.error or result.code)
        return result.error or f"the output fails the {name} check"


# -- rules -------------------------------------------------------------------------------------


def rule_verdict(request: ReviewRequested) -> ReviewVerdict | None:
    """A decision the evidence makes on its own, without asking the model; None if it cannot.

    In order: a failed or empty result is sent back with the failure as feedback; a calculator
    call on numbers found neither in the goal nor in earlier results is sent back (the model made
    them up); a result that is a tool's own output is approved (the tool computed it); an answer
    written around a tool's result, or a final answer resting on tool results, is approved when
    it states every computed result, and sent back when it does not.
    """
    failed = failure_verdict(request)
    if failed is not None:
        return failed
    succeeded = [c for c in request.result.tool_calls if c.ok]
    if succeeded:
        last = succeeded[-1]
        # Only a calculation can invent numbers; other tools take numbers as settings.
        invented = _ungrounded_numbers(request, last.arguments) if last.tool == CALCULATOR else []
        if invented:
            return _verdict(
                request,
                "revise",
                f"the expression uses {', '.join(invented)}, found neither in the goal nor in "
                "earlier results; compute with the numbers the goal gives",
            )
        if last.output == request.result.output:
            return _verdict(request, "approve", f"computed by {last.tool}")
        return _states_results(request, [last])
    if request.final and request.evidence:
        return _states_results(request, list(request.evidence))
    return None


def failure_verdict(request: ReviewRequested) -> ReviewVerdict | None:
    """Sends back a failed or empty result with the failure as feedback; None otherwise."""
    result = request.result
    if not result.ok or not result.output.strip():
        reason = result.output.strip() or "the result is empty"
        return _verdict(request, "revise", f"the step did not succeed: {clip(reason, 300)}")
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
            "feedback": clip(feedback, 2000),
            "checked_by": "rule",
        }
    )


class Reviewer:
    """Answers ``ReviewRequested`` with ``ReviewVerdict``.

    In order: a failed or empty result goes back; the step's declared checks run (the first
    failing one sends the result back with its feedback); the evidence rules; the model.

    Args:
        model: Chat model for judgement calls.
        max_chars: Longest feedback the model may write.
        tools: Predicate tools that ``tool`` checks may name (``no_placeholders`` is built in).
        workspace_root: Root of the per-task workspaces given to predicate tools
            (``agents.workspace_dir``; default: the temporary directory).
    """

    name = NAME

    def __init__(
        self,
        model: ModelClient,
        *,
        max_chars: int = 160,
        tools: ToolRegistry | None = None,
        workspace_root: Path | None = None,
    ):
        self._model = model
        # The verdict's schema and its token bound are the same for every review.
        self._schema = object_schema(
            {"decision": {"type": "string", "enum": DECISIONS}, "feedback": text_field(max_chars)}
        )
        self._schema_tokens = schema_token_bound(self._schema)
        self._checks = CheckRunner(tools, workspace_root=workspace_root)

    async def handle(self, message: AnyMessage) -> AnyMessage:
        """Reviews a ``ReviewRequested``; any other message is an error."""
        if not isinstance(message, ReviewRequested):
            raise AgentError(f"{NAME} cannot handle {message.type!r}", code="unhandled_message")
        failed = failure_verdict(message)
        if failed is not None:
            return failed
        problem = await self._checks.first_failure(message)
        if problem is not None:
            return _verdict(message, "revise", problem)
        ruled = rule_verdict(message)
        if ruled is not None:
            return ruled
        if message.step.checks:
            # The step's author said what a good result is, and it holds: a model's opinion
            # would only add noise (a small reviewer model rejects sound work).
            count = len(message.step.checks)
            return _verdict(message, "approve", f"passed its {count} declared check(s)")
        return await self._model_verdict(message)

    async def _model_verdict(self, request: ReviewRequested) -> ReviewVerdict:
        meter = UsageMeter(self._model)
        data, _ = await ask_json(
            meter,
            prompt=load_prompt("reviewer"),
            user=self._user_prompt(request),
            schema=self._schema,
            name="review",
            max_tokens=self._schema_tokens,
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
                "feedback": clip(str(data.get("feedback", "")), 2000),
                "checked_by": "model",
                "usage": meter.usage,
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
