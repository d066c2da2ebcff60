"""The RAG example: chunking, search, citations, and one real run on the bundled model."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
import ray

from agents import start_team
from agents._toolkit import ToolContext
from examples.rag.chunks import chunk_markdown, load_docs, slugify
from examples.rag.citations import CITATION_PATTERN, parse_citations, resolve
from examples.rag.index import DocsIndex, Passage, start_index
from examples.rag.tools import (
    CiteArgs,
    CitesRetrievedArgs,
    CitesRetrievedTool,
    CiteTool,
    DocsSearchArgs,
    DocsSearchTool,
    SupportedArgs,
    SupportedByRetrievedTool,
    cite_input,
)
from examples.rag.workflow import (
    ANSWER_STEP,
    CITED_STEP,
    SEARCH_STEP,
    rag_answer,
    rag_plan,
    rag_settings,
    rag_task,
)
from memory import LocalEmbedder
from protocols import TaskCompleted

DOCS = Path(__file__).resolve().parents[2] / "examples" / "rag" / "docs"

GUIDE = """Intro text before any heading.

# Guide

Welcome.

## Install

Run the installer.

```
# not a heading
```

## FAQ: Ports & Proxies!

First paragraph.

Second paragraph.

## Install
Again.
"""


def ctx(tmp_path: Path) -> ToolContext:
    return ToolContext(task_id="t1", step_id="s1", workspace=tmp_path)


# -- chunking ----------------------------------------------------------------------------------


def test_chunks_keep_their_file_heading_and_text() -> None:
    chunks = chunk_markdown(GUIDE, source="sub/guide.md")
    cited = [(c.citation, c.title, c.text) for c in chunks]
    assert cited == [
        ("sub/guide.md#guide", "guide", "Intro text before any heading."),
        ("sub/guide.md#guide", "Guide", "Welcome."),
        ("sub/guide.md#install", "Guide > Install", "Run the installer.\n``` # not a heading ```"),
        (
            "sub/guide.md#faq-ports--proxies",
            "Guide > FAQ: Ports & Proxies!",
            "First paragraph.\nSecond paragraph.",
        ),
        ("sub/guide.md#install-1", "Guide > Install", "Again."),
    ]
    assert slugify("FAQ: Ports & Proxies!") == "faq-ports--proxies"


def test_a_long_section_is_split_between_paragraphs_under_one_citation() -> None:
    body = "\n\n".join(f"Paragraph {i} " + "word " * 20 for i in range(6))
    chunks = chunk_markdown(f"## Long one\n\n{body}", source="a.md", max_chars=250)
    assert len(chunks) > 1
    assert {c.citation for c in chunks} == {"a.md#long-one"}
    assert [c.part for c in chunks] == list(range(len(chunks)))
    assert all(len(c.text) <= 250 for c in chunks)
    assert " ".join(c.text.replace("\n", " ") for c in chunks).count("Paragraph") == 6


def test_the_bundled_docs_load_with_sources_that_exist() -> None:
    chunks = load_docs(DOCS)
    assert len({c.source for c in chunks}) == len(list(DOCS.glob("*.md"))) >= 6
    assert all((DOCS / c.source).is_file() for c in chunks)
    retention = next(c for c in chunks if c.citation == "backup.md#retention")
    assert "14 daily snapshots" in retention.text
    assert retention.title == "Backups > Retention"


def test_loading_an_empty_folder_says_so(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no Markdown"):
        load_docs(tmp_path)


# -- search ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hybrid_index() -> DocsIndex:
    index = DocsIndex(embedder=LocalEmbedder())
    asyncio.run(index.add(load_docs(DOCS)))
    return index


QUESTIONS = [
    ("How long does Kestrel keep daily backup snapshots?", "backup.md#retention"),
    ("How many API requests per minute may a token make?", "api.md#rate-limits"),
    ("What does the error database is locked mean?", "troubleshooting.md#database-is-locked"),
    ("How much does the Team plan cost per user?", "pricing.md#team"),
    ("How many devices can one user sync?", "sync.md#device-limit"),
    ("How do I restore a snapshot?", "backup.md#restore"),
]


@pytest.mark.parametrize(("question", "expected"), QUESTIONS)
def test_search_ranks_the_answering_passage_first_and_labels_citations(
    hybrid_index: DocsIndex, tmp_path: Path, question: str, expected: str
) -> None:
    tool = DocsSearchTool(hybrid_index)
    result = asyncio.run(tool.run(DocsSearchArgs(query=question), ctx(tmp_path)))
    assert result.ok, result.error
    lines = result.output.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"[{expected}] ")
    assert all(re.match(CITATION_PATTERN, line) for line in lines)
    assert len(set(parse_citations(result.output))) == 2  # one passage per section


def test_keyword_only_search_also_finds_it(tmp_path: Path) -> None:
    index = DocsIndex()
    asyncio.run(index.add(load_docs(DOCS)))
    found = asyncio.run(index.search("nightly snapshot 02:00", k=2))
    assert found[0].citation == "backup.md#snapshots"
    assert asyncio.run(index.add(load_docs(DOCS))) == 0  # indexing again adds nothing


class _Nothing:
    async def search(self, query: str, *, k: int) -> list[Passage]:
        return []


def test_search_without_a_match_fails_with_what_to_do(tmp_path: Path) -> None:
    result = asyncio.run(DocsSearchTool(_Nothing()).run(DocsSearchArgs(query="x"), ctx(tmp_path)))
    assert not result.ok
    assert "try other keywords" in (result.error or "")


# -- citations ---------------------------------------------------------------------------------


def test_citations_are_parsed_in_order_once_and_resolved_to_files() -> None:
    text = (
        "Keep 14 [backup.md#retention]; see [sub/x.md#a-b] and [backup.md#retention] again. "
        "Not citations: [Name], [link](http://x), [notes.txt#a], backup.md#retention."
    )
    assert parse_citations(text) == ["backup.md#retention", "sub/x.md#a-b"]
    sources = resolve(parse_citations(text), load_docs(DOCS), docs_dir=DOCS)
    assert sources[0].path == DOCS / "backup.md"
    assert sources[0].title == "Backups > Retention"
    assert sources[0].known
    assert sources[1].path is None
    assert not sources[1].known


@pytest.mark.parametrize(
    ("answer", "ok", "says"),
    [
        ("Fourteen daily snapshots [backup.md#retention].", True, ""),
        ("Fourteen daily snapshots.", False, "cites no source"),
        ("Fourteen [backup.md#retention] [made.md#up].", False, "[made.md#up], which the search"),
    ],
)
def test_the_predicate_accepts_only_citations_that_were_retrieved(
    tmp_path: Path, answer: str, ok: bool, says: str
) -> None:
    retrieved = "[backup.md#retention] Backups > Retention: ...\n[backup.md#restore] ..."
    args = CitesRetrievedArgs(output=answer, inputs={"s1": retrieved})
    result = asyncio.run(CitesRetrievedTool().run(args, ctx(tmp_path)))
    assert result.ok is ok
    assert says in (result.error or "")


PASSAGES = (
    "[backup.md#retention] Backups > Retention: Kestrel keeps the last 14 daily snapshots and 8 "
    "weekly ones, and deletes older snapshots automatically.\n"
    "[backup.md#snapshots] Backups > Snapshots: `kestrel backup create` writes a snapshot at "
    "once. A nightly snapshot is taken at 02:00 server time."
)


def _cite(tmp_path: Path, answer: str, passages: str = PASSAGES) -> tuple[bool, str]:
    text = cite_input("s2", "s1").replace("{{steps.s2}}", answer).replace("{{steps.s1}}", passages)
    result = asyncio.run(CiteTool().run(CiteArgs(text=text), ctx(tmp_path)))
    return result.ok, result.output if result.ok else (result.error or "")


def test_cite_appends_the_retrieved_passages_that_support_the_answer(tmp_path: Path) -> None:
    ok, cited = _cite(tmp_path, "Kestrel keeps the last 14 daily snapshots.")
    assert ok and cited == "Kestrel keeps the last 14 daily snapshots. [backup.md#retention]"
    # citations the model wrote are replaced by the attribution, invented ones included
    ok, cited = _cite(tmp_path, "The nightly snapshot runs at 02:00 [made.md#up].")
    assert ok and cited == "The nightly snapshot runs at 02:00. [backup.md#snapshots]"


def test_cite_fails_when_nothing_retrieved_supports_the_answer(tmp_path: Path) -> None:
    ok, why = _cite(tmp_path, "Ten.")
    assert not ok and "no retrieved passage" in why and "[backup.md#retention]" in why
    ok, why = _cite(tmp_path, "Kestrel keeps 14 daily snapshots.", passages="nothing found")
    assert not ok and "no passage was retrieved" in why


def test_the_grounding_predicate_sends_back_an_answer_that_ignores_the_passages(
    tmp_path: Path,
) -> None:
    tool = SupportedByRetrievedTool()
    grounded = SupportedArgs(output="It keeps 14 daily snapshots.", inputs={"s1": PASSAGES})
    result = asyncio.run(tool.run(grounded, ctx(tmp_path)))
    assert result.ok and "backup.md#retention" in result.output
    vague = SupportedArgs(output="Ten.", inputs={"s1": PASSAGES})
    result = asyncio.run(tool.run(vague, ctx(tmp_path)))
    assert not result.ok and "does not use the passages" in (result.error or "")
    # repeating the question is no answer, though its words are in the passage
    parrot = SupportedArgs(
        output="Kestrel keeps daily snapshots.",
        input="Question: How many daily snapshots does Kestrel keep?\nPassages: ...",
        inputs={"s1": PASSAGES},
    )
    assert not asyncio.run(tool.run(parrot, ctx(tmp_path))).ok
    assert asyncio.run(tool.run(parrot.model_copy(update={"input": ""}), ctx(tmp_path))).ok


def test_the_plan_searches_answers_then_cites_under_checks() -> None:
    plan = rag_plan("How long are backups kept?")
    search, answer, cited = plan.steps
    assert (search.tool, search.input) == ("docs_search", "How long are backups kept?")
    assert (answer.tool, answer.tools) == ("answer", ())  # one model call, no tool specs
    assert answer.depends_on == (search.id,)
    assert "{{steps.s1}}" in answer.input
    assert [(c.kind, c.value) for c in answer.checks] == [("tool", "supported_by_retrieved")]
    assert cited.tool == "cite" and cited.depends_on == (search.id, answer.id)
    assert "{{steps.s2}}" in cited.input and "{{steps.s1}}" in cited.input
    assert [(c.kind, c.value) for c in cited.checks] == [
        ("regex", CITATION_PATTERN),
        ("tool", "cites_retrieved"),
    ]


# -- end to end --------------------------------------------------------------------------------


@pytest.mark.ray
@pytest.mark.e2e
def test_a_question_is_answered_with_a_cited_retrieved_source(
    serve_base_url: str, tmp_path: Path
) -> None:
    chunks = load_docs(DOCS)
    settings = rag_settings(
        tmp_path,
        # The session's model has a 1,024-token context: prompt + reply must stay inside it.
        overrides={"agents": {"context_tokens": 640, "max_input_chars": 200}},
    ).with_local_endpoint(serve_base_url)
    index = start_index(chunks)
    try:
        team = start_team(settings)
        try:
            outcome = team.run(rag_task("How long does Kestrel keep daily backups?"), timeout_s=600)
        finally:
            team.stop()
    finally:
        ray.kill(index, no_restart=True)

    trace = "\n".join(
        f"{e.sender} {e.message_type} {e.step_id}: {e.summary}" for e in outcome.trace
    )
    reason = getattr(outcome, "reason", "")
    assert isinstance(outcome, TaskCompleted), f"{reason}\ntrace:\n{trace}"
    result = rag_answer(outcome, chunks, docs_dir=DOCS)
    records = {r.step.id: r for r in outcome.steps}
    assert "backup.md#retention" in result.retrieved
    # The model's answer was grounded in a passage, and the cited answer passed the checks.
    assert records[ANSWER_STEP].output in result.answer
    cited = records[CITED_STEP]
    assert cited.approved, (cited.output, cited.feedback)
    assert result.cites_retrieved, result
    assert set(parse_citations(records[SEARCH_STEP].output)) >= {s.citation for s in result.sources}
    # Every cited source is a real file, and one of them holds the fact asked about.
    assert all(source.path is not None and source.path.is_file() for source in result.sources)
    texts = {c.citation: c.text for c in chunks}
    assert any("14 daily snapshots" in texts[s.citation] for s in result.sources), result
