"""The declared plan (search, answer, cite), the team settings it needs, and reading the outcome
back as an answer with sources."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agents import TroupeSettings
from examples.rag.chunks import Chunk
from examples.rag.citations import CITATION_PATTERN, Source, parse_citations, resolve
from examples.rag.tools import cite_input
from protocols import (
    Budget,
    Plan,
    Step,
    StepCheck,
    TaskCompleted,
    TaskFailed,
    TaskSubmitted,
)

TOOLS_FACTORY = "examples.rag.tools:rag_tools"
WORKFLOW = "rag"
SEARCH_STEP = "s1"
ANSWER_STEP = "s2"
CITED_STEP = "s3"


def rag_plan(question: str, *, predicate: bool = True, answer_revisions: int = 0) -> Plan:
    """Three steps: ``docs_search`` on the question; the model's answer over its passages (one
    call, no tools), which a retrieved passage must support (``supported_by_retrieved``); then
    ``cite``, which appends the ids of the supporting passages, checked by the reviewer for the
    citation form (regex) and for citing only retrieved passages (``cites_retrieved``).

    ``predicate=False`` leaves out the predicate-tool checks (for a reviewer that is not given
    the team's custom tools). ``answer_revisions`` is how often the answer may be sent back: 0
    by default, because the bundled SmolLM2 as reviewer rejects nearly every answer (right ones
    included) and each retry, prompted with that feedback, is worse than the first answer. The
    first answer is then kept (unapproved, in the trace) and ``cite`` decides: an answer that no
    retrieved passage supports fails the task. Raise it with a model that reviews sensibly.
    """
    checks = [
        StepCheck(
            kind="regex",
            value=CITATION_PATTERN,
            message="the answer must end with the [file.md#anchor] id of a retrieved passage",
        )
    ]
    if predicate:
        checks.append(StepCheck(kind="tool", value="cites_retrieved"))
    grounded = (StepCheck(kind="tool", value="supported_by_retrieved"),) if predicate else ()
    search = Step(
        id=SEARCH_STEP,
        description="Search the documents for passages that answer the question.",
        # Only the question: the tool's other argument keeps its default, and the reviewer's
        # rule against numbers found nowhere in the goal has nothing to object to.
        tool="docs_search",
        input=question,
    )
    answer = Step(
        id=ANSWER_STEP,
        description="Answer the question in one sentence using only the passages.",
        tool="answer",
        input=(
            f"Question: {question}\nPassages:\n{{{{steps.{SEARCH_STEP}}}}}\n"
            "Answer with the sentence of a passage that answers the question."
        ),
        depends_on=(SEARCH_STEP,),
        checks=grounded,
        max_revisions=answer_revisions,
        # One model call: tool specs would crowd the passages out of a small model's context.
        tools=(),
    )
    cited = Step(
        id=CITED_STEP,
        description="Cite the retrieved passages that support the answer.",
        tool="cite",
        input=cite_input(ANSWER_STEP, SEARCH_STEP),
        depends_on=(SEARCH_STEP, ANSWER_STEP),
        checks=tuple(checks),
        # Deterministic: running it again gives the same result.
        max_revisions=0,
    )
    return Plan(steps=(search, answer, cited))


def rag_task(
    question: str, *, budget: Budget | None = None, predicate: bool = True
) -> TaskSubmitted:
    """The task that answers ``question`` with the declared plan (see ``rag_plan``)."""
    return TaskSubmitted(
        task_id=f"rag-{uuid.uuid4().hex[:12]}",
        goal=question,
        plan=rag_plan(question, predicate=predicate),
        workflow=WORKFLOW,
        budget=budget or Budget(max_steps=3, max_revisions=2, max_replans=0),
    )


def rag_settings(data_dir: Path, *, overrides: dict[str, Any] | None = None) -> TroupeSettings:
    """Team settings for the example: the RAG tools, executors limited to ``docs_search`` and
    ``cite``, and state (memory, journal, workspaces, dead letters) under ``data_dir``."""
    config: dict[str, Any] = {
        "agents": {
            "executors": 1,
            "max_answer_chars": 200,
            # Past tasks are no help with the docs; leave the prompt to the passages.
            "recall_episodes": 0,
            "tools": {"custom": [TOOLS_FACTORY]},
            # The predicates are the reviewer's, not something a step calls.
            "executor_tools": ["docs_search", "cite"],
            "workspace_dir": str(data_dir / "workspaces"),
        },
        "memory": {"data_dir": str(data_dir / "memory"), "actor_name": "troupe-memory-rag"},
        "journal": {"data_dir": str(data_dir / "journal")},
        "bus": {
            "dead_letters_path": str(data_dir / "bus" / "dead-letters.jsonl"),
            "actor_name": "troupe-dead-letters-rag",
        },
    }
    for section, values in (overrides or {}).items():
        config[section] = {**config.get(section, {}), **values}
    return TroupeSettings.model_validate(config)


class RagAnswer(BaseModel):
    """What the task came to: the checked answer, what it cites, and what was retrieved."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    completed: bool = Field(description="Whether the task completed.")
    answer: str = Field(description="The cited answer (the cite step's output, checked).")
    final_answer: str = Field(default="", description="The task's final answer.")
    retrieved: list[str] = Field(description="Citation ids the search step returned.")
    sources: list[Source] = Field(description="Citations of the answer, resolved to files.")
    reason: str = Field(default="", description="Why the task failed, when it did.")

    @property
    def cites_retrieved(self) -> bool:
        """At least one source is cited, and every cited one was retrieved."""
        return bool(self.sources) and all(s.citation in self.retrieved for s in self.sources)


def rag_answer(
    outcome: TaskCompleted | TaskFailed, chunks: Sequence[Chunk], *, docs_dir: Path
) -> RagAnswer:
    """The outcome read as an answer with sources (citations resolved against ``chunks``)."""
    outputs = {record.step.id: record.output for record in outcome.steps}
    answer = outputs.get(CITED_STEP, "")
    return RagAnswer(
        completed=isinstance(outcome, TaskCompleted),
        answer=answer,
        final_answer=outcome.final_answer if isinstance(outcome, TaskCompleted) else "",
        retrieved=parse_citations(outputs.get(SEARCH_STEP, "")),
        sources=resolve(parse_citations(answer), chunks, docs_dir=docs_dir),
        reason=outcome.reason if isinstance(outcome, TaskFailed) else "",
    )


def render(result: RagAnswer) -> str:
    """The answer and its sources as a person reads them."""
    if not result.completed:
        lines = [f"FAILED: {result.reason}"]
        if result.answer:
            lines.append(f"last answer: {result.answer}")
        return "\n".join(lines)
    lines = [result.answer or result.final_answer, "", "sources:"]
    for source in result.sources:
        where = f"{source.path} ({source.title})" if source.path else "not in the docs"
        mark = "" if source.citation in result.retrieved else " [not retrieved]"
        lines.append(f"  [{source.citation}] {where}{mark}")
    if not result.sources:
        lines.append("  (the answer cites none)")
    if result.final_answer and result.final_answer != result.answer:
        lines += ["", f"final answer (rewritten by the team): {result.final_answer}"]
    return "\n".join(lines)
