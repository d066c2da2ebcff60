"""Declared workflows: a named DAG of steps, written in YAML (or built in Python), run as given.

A workflow names its inputs and its steps. ``{{inputs.x}}`` is filled in when a task is made
from the workflow (``Workflow.task``); ``{{steps.y}}`` in a step's ``input`` is left for the
coordinator, which puts step ``y``'s output there before the step runs, and makes the step
depend on ``y``. A workflow that cannot run (an unknown step or input, a cycle, a missing
required input, an unknown key) is refused with an error naming the file, the step and the field.

Example::

    name: greet
    inputs:
      who: {description: Whom to greet, default: world}
    steps:
      - id: hello
        description: Say hello to {{inputs.who}}
        input: Write one line greeting {{inputs.who}}.
        checks: [{kind: max_chars, value: "80"}]
      - id: shout
        tool: upper
        input: "{{steps.hello}}"
      - id: sum
        description: Add up the greetings' lengths
        input: "How long is {{steps.shout}}?"
        tools: [calculator]

An ``answer`` step (the model) makes one model call and may call no tool, unless it lists
``tools:``: then it runs the executor's tool loop offered only those (still within the
executor's allow-list). Each tool spec costs prompt tokens, so a small model's context stays
free for the step's input.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from protocols import (
    MAX_PLAN_STEPS,
    Budget,
    ConfigurationError,
    Plan,
    Step,
    StepCheck,
    TaskSubmitted,
)
from protocols.planning import find_cycle

MODEL_TOOL = "answer"
FINAL_STEP = "final"
"""Reserved: the coordinator's own last step."""

_REFERENCE = re.compile(r"\{\{\s*([A-Za-z_][\w-]*)\.([A-Za-z0-9_][\w-]*)\s*\}\}")
_INPUT_REF = re.compile(r"\{\{\s*inputs\.([A-Za-z_][\w-]*)\s*\}\}")
_STEP_REF = re.compile(r"\{\{\s*steps\.([A-Za-z0-9_][\w-]*)\s*\}\}")
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class WorkflowError(ConfigurationError):
    """A workflow file or a workflow's inputs are wrong; the message says where and what."""

    default_code = "invalid_workflow"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class WorkflowInput(_Model):
    """One named input of a workflow."""

    description: str = Field(default="", max_length=500, description="What the input is.")
    default: str | None = Field(
        default=None, max_length=2000, description="Value when none is given (None: required)."
    )
    required: bool | None = Field(
        default=None, description="Whether a value must be given; default: when no default."
    )

    @field_validator("default", mode="before")
    @classmethod
    def _scalar_as_text(cls, value: Any) -> Any:
        return _as_text(value)

    @model_validator(mode="after")
    def _default_or_required(self) -> WorkflowInput:
        if self.required and self.default is not None:
            raise ValueError("an input with a default is not required; drop one of the two")
        return self

    @property
    def is_required(self) -> bool:
        """Whether a task must give this input."""
        return self.default is None if self.required is None else self.required


class RetryPolicy(_Model):
    """How often the reviewer may send the step back."""

    max_revisions: int = Field(ge=0, le=5, description="Revisions of this step (task default).")


class WorkflowStep(_Model):
    """One step as declared: what runs, on what input, after what, under which checks."""

    id: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$", description="Unique id (1-32 characters)."
    )
    description: str = Field(min_length=1, max_length=500, description="What the step does.")
    tool: str = Field(
        default=MODEL_TOOL,
        min_length=1,
        max_length=64,
        description="A tool's name, or 'answer' for the model.",
    )
    input: str = Field(
        default="",
        max_length=2000,
        description="The tool's input; may hold {{inputs.x}} and {{steps.y}}.",
    )
    depends_on: tuple[str, ...] = Field(
        default=(), description="Steps to wait for besides those {{steps.y}} names."
    )
    approval: bool = Field(default=False, description="A human must approve before it runs.")
    retry: RetryPolicy | None = Field(default=None, description="Per-step revision budget.")
    checks: tuple[StepCheck, ...] = Field(
        default=(), max_length=16, description="Deterministic checks of the step's output."
    )
    tools: tuple[str, ...] | None = Field(
        default=None,
        max_length=32,
        description="Tools the model may call in an 'answer' step (default: none, one call).",
    )

    @field_validator("checks", mode="before")
    @classmethod
    def _check_values_as_text(cls, checks: Any) -> Any:
        """YAML writes ``value: 600`` or a schema as a mapping; checks take text."""
        if not isinstance(checks, list | tuple):
            return checks
        return [
            {**c, "value": _as_text(c["value"])} if isinstance(c, dict) and "value" in c else c
            for c in checks
        ]

    @field_validator("tools")
    @classmethod
    def _tools_only_for_answers(
        cls, tools: tuple[str, ...] | None, info: ValidationInfo
    ) -> tuple[str, ...] | None:
        tool = info.data.get("tool", MODEL_TOOL)
        if tools is not None and tool != MODEL_TOOL:
            raise ValueError(
                f"only an {MODEL_TOOL!r} step lists tools (what the model may call); tool "
                f"{tool!r} runs by itself"
            )
        return tools

    def needs(self) -> tuple[str, ...]:
        """Every step this one waits for: explicit ``depends_on``, then ``{{steps.y}}``."""
        referenced = _STEP_REF.findall(self.input)
        return tuple(dict.fromkeys([*self.depends_on, *referenced]))


class Workflow(_Model):
    """A declared workflow: named inputs and a DAG of at most 16 steps.

    Build one with ``load_workflow(path)`` or ``Workflow.from_data(mapping)``; constructing it
    directly raises pydantic's ``ValidationError`` instead of a ``WorkflowError``.
    """

    name: str = Field(pattern=_NAME, description="Workflow name (letters, digits, _ . -).")
    description: str = Field(default="", max_length=2000, description="What it does.")
    inputs: dict[str, WorkflowInput] = Field(default_factory=dict, description="Named inputs.")
    budget: Budget | None = Field(
        default=None, description="Budget of its tasks (default: the Budget defaults)."
    )
    steps: tuple[WorkflowStep, ...] = Field(
        min_length=1, max_length=MAX_PLAN_STEPS, description="The steps, in order."
    )

    @model_validator(mode="after")
    def _check(self) -> Workflow:
        bad_inputs = [n for n in self.inputs if not re.match(r"^[A-Za-z_][\w-]*$", n)]
        if bad_inputs:
            raise ValueError(f"inputs: {bad_inputs[0]!r} is not a valid input name")
        _check_steps(self)
        return self

    @classmethod
    def from_data(cls, data: Any, *, source: str = "<workflow>") -> Workflow:
        """Validates a mapping (as parsed from YAML).

        Raises:
            WorkflowError: naming ``source``, each step and field that is wrong.
        """
        if not isinstance(data, Mapping):
            raise WorkflowError(
                f"{source}: a workflow must be a mapping with name and steps, "
                f"not {type(data).__name__}"
            )
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            raise WorkflowError(f"{source}: {_describe(exc, data)}") from None

    def tool_names(self) -> list[str]:
        """The tools the steps name or list (besides ``answer``), sorted."""
        listed = {name for s in self.steps for name in s.tools or ()}
        return sorted(({s.tool for s in self.steps} | listed) - {MODEL_TOOL})

    def check_tools(self, known: Iterable[str]) -> None:
        """Refuses steps whose tool is neither ``answer`` nor in ``known``.

        Raises:
            WorkflowError: naming each step and its unknown tool.
        """
        names = set(known) | {MODEL_TOOL}
        unknown = [
            f"step {s.id!r} field tool: unknown tool {s.tool!r}"
            for s in self.steps
            if s.tool not in names
        ]
        unknown += [
            f"step {s.id!r} field tools: unknown tool {name!r}"
            for s in self.steps
            for name in s.tools or ()
            if name not in names - {MODEL_TOOL}
        ]
        if unknown:
            listed = ", ".join(sorted(names))
            raise WorkflowError(
                f"workflow {self.name!r}: " + "; ".join(unknown) + f" (known tools: {listed})"
            )

    def resolve_inputs(self, given: Mapping[str, str]) -> dict[str, str]:
        """Every input's value: the given one, else its default.

        Raises:
            WorkflowError: on an unknown input, a missing required one, or a value holding
                ``{{`` (a value cannot add references).
        """
        unknown = sorted(set(given) - set(self.inputs))
        if unknown:
            known = ", ".join(sorted(self.inputs)) or "none"
            raise WorkflowError(
                f"workflow {self.name!r}: unknown input(s) {', '.join(unknown)}; inputs are {known}"
            )
        values: dict[str, str] = {}
        missing = []
        for name, spec in self.inputs.items():
            if name in given:
                values[name] = str(given[name])
            elif spec.default is not None:
                values[name] = spec.default
            elif spec.is_required:
                missing.append(name)
            else:
                values[name] = ""
        if missing:
            described = ", ".join(
                f"{n} ({self.inputs[n].description})" if self.inputs[n].description else n
                for n in missing
            )
            raise WorkflowError(f"workflow {self.name!r}: missing required input(s): {described}")
        braced = [n for n, v in values.items() if "{{" in v]
        if braced:
            raise WorkflowError(
                f"workflow {self.name!r}: input {braced[0]!r} holds '{{{{'; input values cannot "
                "add references"
            )
        return values

    def plan(self, inputs: Mapping[str, str]) -> Plan:
        """The steps with inputs filled in, as a ``Plan`` the coordinator runs as given.

        Raises:
            WorkflowError: as ``resolve_inputs``, or when a filled-in step is too long.
        """
        values = self.resolve_inputs(inputs)
        steps = []
        for index, step in enumerate(self.steps):
            try:
                steps.append(_render_step(step, values))
            except ValidationError as exc:
                where = _fields(exc)
                raise WorkflowError(
                    f"workflow {self.name!r}: step {step.id!r} (steps[{index}]) field {where} "
                    "once inputs are filled in"
                ) from None
        return Plan(steps=tuple(steps))

    def task(
        self,
        inputs: Mapping[str, str] | None = None,
        *,
        task_id: str | None = None,
        budget: Budget | None = None,
        goal: str | None = None,
    ) -> TaskSubmitted:
        """A task that runs this workflow with these inputs.

        Args:
            inputs: Values of the workflow's inputs (defaults fill the rest).
            task_id: Task id (default: ``<name>-<random>``).
            budget: Budget (default: the workflow's, else ``Budget`` with ``max_steps`` set to
                the number of steps).
            goal: The goal the agents see (default: the workflow's description, filled in).

        Raises:
            WorkflowError: on bad inputs, or a budget too small for the steps.
        """
        plan = self.plan(inputs or {})
        values = self.resolve_inputs(inputs or {})
        budget = budget or self.budget or Budget(max_steps=len(plan.steps))
        if budget.max_steps < len(plan.steps):
            raise WorkflowError(
                f"workflow {self.name!r} has {len(plan.steps)} steps but the budget allows "
                f"max_steps={budget.max_steps}; raise it to at least {len(plan.steps)}"
            )
        text = goal or _fill(self.description, values).strip() or f"Run workflow {self.name}"
        try:
            return TaskSubmitted(
                task_id=task_id or f"{self.name[:40]}-{uuid.uuid4().hex[:12]}",
                goal=text[:4000],
                budget=budget,
                plan=plan,
                workflow=self.name[:128],
            )
        except ValidationError as exc:
            raise WorkflowError(f"workflow {self.name!r}: task field {_fields(exc)}") from None


def load_workflow(path: str | Path) -> Workflow:
    """Reads and validates a workflow file (YAML or JSON).

    Raises:
        WorkflowError: naming the file, and the step and field that are wrong.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise WorkflowError(f"cannot read workflow file {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise WorkflowError(f"{path}: not valid YAML{where}: {problem}") from None
    return Workflow.from_data(data, source=str(path))


def _as_text(value: Any) -> Any:
    """Numbers as their text, mappings and lists as JSON; anything else unchanged."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, dict | list):
        return json.dumps(value)
    return value


# -- validation --------------------------------------------------------------------------------


def _check_steps(workflow: Workflow) -> None:
    """Ids unique and not reserved, references known, no cycle; raises ``ValueError``."""
    ids = [s.id for s in workflow.steps]
    for index, step in enumerate(workflow.steps):
        where = f"step {step.id!r} (steps[{index}])"
        if step.id == FINAL_STEP:
            raise ValueError(f"{where} field id: {FINAL_STEP!r} is reserved for the final answer")
        if ids.count(step.id) > 1:
            raise ValueError(f"{where} field id: the id is used by more than one step")
        for field in ("description", "input"):
            _check_references(where, field, getattr(step, field), workflow)
        for n, check in enumerate(step.checks):
            for part in ("value", "message"):
                text = getattr(check, part)
                if _STEP_REF.search(text):
                    raise ValueError(
                        f"{where} field checks[{n}].{part}: {{{{steps.*}}}} is only filled in "
                        "input; a predicate tool check receives the dependency outputs"
                    )
                _check_references(where, f"checks[{n}].{part}", text, workflow)
        for dep in step.needs():
            if dep not in ids:
                raise ValueError(
                    f"{where} field depends_on: unknown step {dep!r}; steps are {', '.join(ids)}"
                )
            if dep == step.id:
                raise ValueError(f"{where} field depends_on: the step depends on itself")
    cycle = find_cycle({s.id: s.needs() for s in workflow.steps})
    if cycle:
        raise ValueError(f"steps: dependency cycle {' -> '.join(cycle)}")


def _check_references(where: str, field: str, text: str, workflow: Workflow) -> None:
    for kind, name in _REFERENCE.findall(text):
        if kind == "inputs":
            if name not in workflow.inputs:
                known = ", ".join(sorted(workflow.inputs)) or "none"
                raise ValueError(
                    f"{where} field {field}: unknown input {{{{inputs.{name}}}}}; "
                    f"inputs are {known}"
                )
        elif kind == "steps":
            if field != "input":
                raise ValueError(
                    f"{where} field {field}: {{{{steps.{name}}}}} is only filled in input"
                )
        else:
            raise ValueError(
                f"{where} field {field}: unknown reference {{{{{kind}.{name}}}}}; use "
                "{{inputs.<name>}} or {{steps.<id>}}"
            )


def _describe(exc: ValidationError, data: Mapping[str, Any]) -> str:
    """One line per problem; a step is named by its id where the data has one."""
    steps = data.get("steps")
    lines = []
    for err in exc.errors(include_url=False):
        loc = list(err["loc"])
        message = err["msg"]
        if err["type"] == "value_error":
            message = message.removeprefix("Value error, ")
        if len(loc) >= 2 and loc[0] == "steps" and isinstance(loc[1], int):
            index = loc[1]
            step_id = None
            if isinstance(steps, list) and index < len(steps) and isinstance(steps[index], dict):
                step_id = steps[index].get("id")
            name = f"step {step_id!r} (steps[{index}])" if step_id else f"steps[{index}]"
            field = _dotted(loc[2:]) or "(the step)"
            lines.append(f"{name} field {field}: {message}")
        elif loc:
            lines.append(f"field {_dotted(loc)}: {message}")
        else:
            lines.append(message)
    return "; ".join(lines)


def _dotted(loc: list[Any]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _fields(exc: ValidationError) -> str:
    return "; ".join(f"{_dotted(list(e['loc']))}: {e['msg']}" for e in exc.errors())


# -- rendering ---------------------------------------------------------------------------------


def _fill(text: str, values: Mapping[str, str]) -> str:
    """Puts input values in for ``{{inputs.x}}``; ``{{steps.y}}`` stays for the coordinator."""
    return _INPUT_REF.sub(lambda m: values[m.group(1)], text)


def _render_step(step: WorkflowStep, values: Mapping[str, str]) -> Step:
    checks = tuple(
        check.model_copy(
            update={"value": _fill(check.value, values), "message": _fill(check.message, values)}
        )
        for check in step.checks
    )
    return Step.model_validate(
        {
            "id": step.id,
            "description": _fill(step.description, values),
            "tool": step.tool,
            "input": _fill(step.input, values),
            "depends_on": step.needs(),
            "requires_approval": step.approval,
            "checks": [c.model_dump() for c in checks],
            "max_revisions": step.retry.max_revisions if step.retry else None,
            # A declared answer step just writes, unless it lists tools: offering every tool
            # would fill a small model's context with specs it does not need.
            "tools": (step.tools or ()) if step.tool == MODEL_TOOL else None,
        }
    )
