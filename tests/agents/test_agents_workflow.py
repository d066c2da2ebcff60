"""Declared workflows: loading, rendering, inferred dependencies, and every validation error."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from agents._workflow import Workflow, WorkflowError, load_workflow
from protocols import Budget, ConfigurationError, Plan, TaskSubmitted

GREET = """
name: greet
description: Greet {{inputs.who}} from {{inputs.town}}
inputs:
  who: {description: Whom to greet}
  town: {default: Paris}
  note: {required: false}
budget: {max_steps: 5, max_revisions: 2}
steps:
  - id: hello
    description: Say hello to {{inputs.who}}
    input: Write one line greeting {{inputs.who}} from {{inputs.town}}.{{inputs.note}}
    retry: {max_revisions: 3}
    checks:
      - {kind: max_chars, value: 80}
      - {kind: contains, value: "{{inputs.who}}", message: "name {{inputs.who}}"}
      - {kind: json_schema, value: {type: object}}
  - id: count
    description: Count the letters
    tool: calculator
    input: "{{steps.hello}} and {{ steps.hello }}"
  - id: send
    description: Send it
    tool: mailer
    approval: true
    depends_on: [count]
    input: "{{steps.hello}}"
"""


def _write(tmp_path: Path, text: str, name: str = "wf.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def _load(tmp_path: Path, text: str) -> Workflow:
    return load_workflow(_write(tmp_path, text))


def _data(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "w",
        "steps": [
            {"id": "a", "description": "first", "input": "x"},
            {"id": "b", "description": "second", "input": "{{steps.a}}"},
        ],
    }
    base.update(changes)
    return base


# -- loading and rendering --------------------------------------------------------------------


def test_a_workflow_file_becomes_a_task_with_a_declared_plan(tmp_path: Path) -> None:
    workflow = _load(tmp_path, GREET)
    task = workflow.task({"who": "Ana"}, task_id="t-1")
    assert isinstance(task, TaskSubmitted)
    assert (task.task_id, task.workflow, task.goal) == ("t-1", "greet", "Greet Ana from Paris")
    assert task.budget == Budget(max_steps=5, max_revisions=2)
    assert isinstance(task.plan, Plan)
    hello, count, send = task.plan.steps
    assert hello.description == "Say hello to Ana"
    assert hello.input == "Write one line greeting Ana from Paris."  # optional input: empty
    assert hello.max_revisions == 3 and not hello.requires_approval
    assert [(c.kind, c.value, c.message) for c in hello.checks] == [
        ("max_chars", "80", ""),
        ("contains", "Ana", "name Ana"),
        ("json_schema", '{"type": "object"}', ""),
    ]
    # {{steps.y}} stays for the coordinator, and makes the step depend on y.
    assert count.input == "{{steps.hello}} and {{ steps.hello }}"
    assert count.depends_on == ("hello",) and count.max_revisions is None
    assert send.depends_on == ("count", "hello")
    assert send.requires_approval and send.tool == "mailer"


def test_given_inputs_replace_defaults_and_ids_are_generated(tmp_path: Path) -> None:
    workflow = _load(tmp_path, GREET)
    task = workflow.task({"who": "Ben", "town": "Lyon", "note": " Be brief."})
    assert task.plan is not None
    assert task.plan.steps[0].input == "Write one line greeting Ben from Lyon. Be brief."
    assert task.task_id.startswith("greet-") and task.task_id != workflow.task({"who": "B"}).task_id


def test_the_budget_defaults_to_one_that_fits_the_steps() -> None:
    workflow = Workflow.from_data(_data())
    task = workflow.task()
    assert task.budget.max_steps == 2
    assert workflow.task(budget=Budget(max_steps=3, max_revisions=0)).budget.max_revisions == 0
    with pytest.raises(WorkflowError, match="has 2 steps but the budget allows max_steps=1"):
        workflow.task(budget=Budget(max_steps=1))


def test_a_workflow_can_be_built_in_python() -> None:
    workflow = Workflow.model_validate(_data())
    assert workflow.steps[1].needs() == ("a",)
    assert workflow.task(goal="do it").goal == "do it"
    assert workflow.task().goal == "Run workflow w"


def test_answer_steps_call_no_tool_unless_they_list_some(tmp_path: Path) -> None:
    workflow = _load(
        tmp_path,
        """
        name: w
        steps:
          - {id: write, description: Write it}
          - {id: sum, description: Add it up, input: "1 + 2", tools: [calculator]}
          - {id: count, description: Count, tool: calculator, input: "{{steps.write}}"}
        """,
    )
    assert workflow.tool_names() == ["calculator"]
    task = workflow.task()
    assert task.plan is not None
    write, total, count = task.plan.steps
    assert write.tools == ()  # one model call, no tool specs in the prompt
    assert total.tools == ("calculator",)
    assert count.tools is None  # a tool step runs its own tool
    with pytest.raises(WorkflowError, match="step 'sum' field tools: unknown tool 'calculatr'"):
        Workflow.from_data(
            _data(steps=[{"id": "sum", "description": "d", "tools": ["calculatr"]}])
        ).check_tools(["calculator"])


def test_tool_names_are_checked_against_a_registry(tmp_path: Path) -> None:
    workflow = _load(tmp_path, GREET)
    assert workflow.tool_names() == ["calculator", "mailer"]
    workflow.check_tools(["calculator", "mailer"])
    with pytest.raises(WorkflowError) as info:
        workflow.check_tools(["calculator"])
    assert "step 'send' field tool: unknown tool 'mailer'" in info.value.message
    assert "(known tools: answer, calculator)" in info.value.message


# -- errors at load time: file, step, field ---------------------------------------------------

LOAD_ERRORS: list[tuple[str, str]] = [
    (
        "name: w\nsteps:\n  - {id: a, description: d, depends_on: [zz]}\n",
        "step 'a' (steps[0]) field depends_on: unknown step 'zz'; steps are a",
    ),
    (
        "name: w\nsteps:\n  - {id: a, description: d, input: '{{steps.nope}}'}\n",
        "step 'a' (steps[0]) field depends_on: unknown step 'nope'",
    ),
    (
        "name: w\nsteps:\n  - {id: a, description: d, depends_on: [b]}\n"
        "  - {id: b, description: d, input: '{{steps.a}}'}\n",
        "steps: dependency cycle a -> b -> a",
    ),
    (
        "name: w\nsteps:\n  - {id: a, description: d, depends_on: [a]}\n",
        "step 'a' (steps[0]) field depends_on: the step depends on itself",
    ),
    (
        "name: w\nsteps:\n  - {id: a, description: d, colour: red}\n",
        "step 'a' (steps[0]) field colour: Extra inputs are not permitted",
    ),
    (
        "name: w\nversion: 2\nsteps:\n  - {id: a, description: d}\n",
        "field version: Extra inputs are not permitted",
    ),
    (
        "name: w\nsteps:\n  - {id: a, description: d, retry: {max_revisions: 9}}\n",
        "step 'a' (steps[0]) field retry.max_revisions: Input should be less than or equal to 5",
    ),
    (
        "name: w\nsteps:\n  - {id: a, description: d, retry: {times: 2}}\n",
        "step 'a' (steps[0]) field retry.times: Extra inputs are not permitted",
    ),
    (
        "name: w\nsteps:\n  - {id: a, description: d, checks: [{kind: spelling}]}\n",
        "step 'a' (steps[0]) field checks[0].kind: Input should be 'min_chars'",
    ),
    (
        "name: w\nsteps:\n  - {id: a, description: d}\n  - {id: a, description: e}\n",
        "step 'a' (steps[0]) field id: the id is used by more than one step",
    ),
    (
        "name: w\nsteps:\n  - {id: final, description: d}\n",
        "step 'final' (steps[0]) field id: 'final' is reserved for the final answer",
    ),
    (
        "name: w\nsteps:\n  - {id: 'bad id', description: d}\n",
        "step 'bad id' (steps[0]) field id: String should match pattern",
    ),
    (
        "name: w\nsteps:\n  - {id: a}\n",
        "step 'a' (steps[0]) field description: Field required",
    ),
    (
        "name: w\nsteps:\n  - {id: a, description: 'hi {{inputs.who}}'}\n",
        "step 'a' (steps[0]) field description: unknown input {{inputs.who}}; inputs are none",
    ),
    (
        "name: w\nsteps:\n  - {id: a, description: d, input: '{{input.who}}'}\n",
        "step 'a' (steps[0]) field input: unknown reference {{input.who}}; use {{inputs.<name>}}",
    ),
    (
        "name: w\nsteps:\n  - {id: a, description: 'after {{steps.b}}'}\n"
        "  - {id: b, description: d}\n",
        "step 'a' (steps[0]) field description: {{steps.b}} is only filled in input",
    ),
    (
        "name: w\nsteps:\n  - {id: a, description: d}\n"
        "  - {id: b, description: d, checks: [{kind: contains, value: '{{steps.a}}'}]}\n",
        "step 'b' (steps[1]) field checks[0].value: {{steps.*}} is only filled in input",
    ),
    (
        "name: w\ninputs: {x: {default: a, required: true}}\nsteps:\n  - {id: a, description: d}\n",
        "field inputs.x: an input with a default is not required",
    ),
    (
        "name: w\nsteps:\n  - {id: a, description: d, tool: mailer, tools: [calculator]}\n",
        "step 'a' (steps[0]) field tools: only an 'answer' step lists tools",
    ),
    ("name: w\nsteps: []\n", "field steps: Tuple should have at least 1 item"),
    ("name: 'no spaces'\nsteps:\n  - {id: a, description: d}\n", "field name: String should"),
    ("steps:\n  - {id: a, description: d}\n", "field name: Field required"),
    ("- just\n- a list\n", "a workflow must be a mapping with name and steps, not list"),
    ("name: w\nsteps: [\n", "not valid YAML at line 3, column 1"),
]


@pytest.mark.parametrize(("text", "message"), LOAD_ERRORS)
def test_a_bad_workflow_file_is_refused_naming_file_step_and_field(
    tmp_path: Path, text: str, message: str
) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(WorkflowError) as info:
        load_workflow(path)
    assert isinstance(info.value, ConfigurationError)  # the user's setup, not a crash
    assert info.value.code == "invalid_workflow"
    assert info.value.message.startswith(f"{path}: ")
    assert message in info.value.message


def test_more_than_16_steps_are_refused(tmp_path: Path) -> None:
    steps = "".join(f"  - {{id: s{i}, description: d}}\n" for i in range(17))
    with pytest.raises(WorkflowError, match="field steps: Tuple should have at most 16 items"):
        _load(tmp_path, f"name: w\nsteps:\n{steps}")
    sixteen = "".join(f"  - {{id: s{i}, description: d}}\n" for i in range(16))
    assert len(_load(tmp_path, f"name: w\nsteps:\n{sixteen}").steps) == 16


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(WorkflowError, match=r"cannot read workflow file .*nope.yaml: No such file"):
        load_workflow(tmp_path / "nope.yaml")


def test_a_step_is_named_by_index_when_it_has_no_id(tmp_path: Path) -> None:
    with pytest.raises(WorkflowError, match=r"steps\[0\] field id: Field required"):
        _load(tmp_path, "name: w\nsteps:\n  - {description: d}\n")


# -- errors at submit time --------------------------------------------------------------------


def test_a_missing_required_input_is_named_with_its_description(tmp_path: Path) -> None:
    workflow = _load(tmp_path, GREET)
    with pytest.raises(WorkflowError, match=r"missing required input\(s\): who \(Whom to greet\)"):
        workflow.task({})


def test_an_unknown_input_is_refused(tmp_path: Path) -> None:
    workflow = _load(tmp_path, GREET)
    with pytest.raises(WorkflowError, match="unknown input.s. whom; inputs are note, town, who"):
        workflow.task({"who": "Ana", "whom": "Ben"})


def test_an_input_value_cannot_add_references(tmp_path: Path) -> None:
    workflow = _load(tmp_path, GREET)
    with pytest.raises(WorkflowError, match="input 'who' holds '\\{\\{'"):
        workflow.task({"who": "{{steps.count}}"})


def test_an_input_that_makes_a_step_too_long_names_the_step_and_field(tmp_path: Path) -> None:
    workflow = _load(tmp_path, GREET)
    with pytest.raises(WorkflowError) as info:
        workflow.task({"who": "A" * 1990})
    assert "step 'hello' (steps[0]) field " in info.value.message
    assert "once inputs are filled in" in info.value.message


def test_python_construction_errors_name_the_source() -> None:
    with pytest.raises(WorkflowError, match=r"^<workflow>: step 'b' \(steps\[1\]\) field dep"):
        Workflow.from_data(
            _data(
                steps=[
                    {"id": "a", "description": "d"},
                    {"id": "b", "description": "d", "depends_on": ["c"]},
                ]
            )
        )
    with pytest.raises(WorkflowError, match="^mine: a workflow must be a mapping"):
        Workflow.from_data("name: w", source="mine")


# -- the hiring workflow ----------------------------------------------------------------------


def test_the_hiring_workflow_loads_and_names_only_real_tools() -> None:
    from examples.hiring.run import WORKFLOW
    from examples.hiring.tools import hiring_tools

    workflow = load_workflow(WORKFLOW)
    names = [tool.name for tool in hiring_tools()]
    workflow.check_tools(names)
    assert set(workflow.tool_names()) <= set(names)
    task = workflow.task({})
    assert task.plan is not None and task.workflow == "hiring"
    steps = {s.id: s for s in task.plan.steps}
    assert task.budget.max_steps >= len(steps)
    assert steps["send"].requires_approval
    assert set(steps["send"].depends_on) == {"pick_1", "pick_2", "compose_1", "compose_2"}
    assert steps["slots"].depends_on == ("responses",)
    for draft in ("draft_1", "draft_2"):
        kinds = [(c.kind, c.value) for c in steps[draft].checks]
        assert ("tool", "no_placeholders") in kinds and ("tool", "no_other_candidate") in kinds
        assert ("contains", "Acme Robotics") in kinds
        assert steps[draft].tool == "answer" and "Acme Robotics" in steps[draft].input
    for email in ("compose_1", "compose_2"):
        assert ("tool", "names_candidate") in [(c.kind, c.value) for c in steps[email].checks]
    check_names = {c.value for s in task.plan.steps for c in s.checks if c.kind == "tool"}
    assert check_names <= {*names, "no_placeholders"}
