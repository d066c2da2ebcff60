"""The RAG tools: ``docs_search`` (retrieve labelled passages), ``cite`` (post-hoc attribution:
append the ids of the retrieved passages that support an answer), and two reviewer predicates:
``supported_by_retrieved`` (the answer shares enough words with a retrieved passage) and
``cites_retrieved`` (the text cites at least one retrieved passage and nothing else).

Enable them with ``agents.tools.custom: ["examples.rag.tools:rag_tools"]``.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field

from agents._toolkit import ToolArgs, ToolContext, ToolResult, TypedTool
from examples.rag.citations import parse_citations
from examples.rag.index import INDEX_ACTOR, Passage, RayDocsIndex, Searcher

MAX_PASSAGE_CHARS = 240
"""Longest passage text in a search result: small prompts leave room for a small context."""
MIN_SHARED_WORDS = 2
"""Content words an answer must share with a passage for the passage to support it."""
ANSWER_MARK = "=== answer"
PASSAGES_MARK = "=== passages"
"""How the ``cite`` step's input separates the answer from the passages (see ``cite_input``)."""

_PASSAGE_LINE = re.compile(r"^\[([\w./-]+\.md#[\w-]+)\] (.*)$", re.MULTILINE)
_WORD = re.compile(r"[a-z0-9]+(?:[.'][a-z0-9]+)*")
_STOPWORDS = frozenset(
    re.findall(
        r"\w+",
        """a an and are as at be by can do does for from has have how i in is it its keep keeps
        of on or that the their them then there these they this to was what when where which
        who will with you your""",
    )
)


class DocsSearchArgs(ToolArgs):
    """What to look for."""

    query: str = Field(min_length=1, max_length=500, description="The question or keywords.")
    k: int = Field(default=2, ge=1, le=5, description="How many passages to return.")


def format_passages(passages: list[Passage], *, max_chars: int = MAX_PASSAGE_CHARS) -> str:
    """One line per passage, starting with its citation: ``[backup.md#retention] Backups >
    Retention: Kestrel keeps the last 14 daily snapshots ...``."""
    blocks = []
    for passage in passages:
        text = " ".join(passage.text.split())
        if len(text) > max_chars:
            text = text[: max_chars - 1] + "…"
        blocks.append(f"[{passage.citation}] {passage.title}: {text}")
    return "\n".join(blocks)


class DocsSearchTool(TypedTool[DocsSearchArgs]):
    """Finds the passages of the local docs that best match a query.

    Args:
        index: Where to search (the named index actor by default).
    """

    name = "docs_search"
    description = (
        "Search the local documents. Returns the best passages, each labelled with its "
        "citation id in brackets, e.g. [guide.md#install]."
    )
    args_model = DocsSearchArgs
    timeout_s = 30.0

    def __init__(self, index: Searcher | None = None) -> None:
        self._index = index or RayDocsIndex()

    async def run(self, args: DocsSearchArgs, ctx: ToolContext) -> ToolResult:
        """The passages, best first; failing when nothing matches."""
        try:
            passages = await self._index.search(args.query, k=args.k)
        except ValueError as exc:  # ray.get_actor: the index actor is not running
            return self.fail(
                f"the docs index is not running ({exc}); start it with "
                f"examples.rag.index.start_index (actor {INDEX_ACTOR!r})",
                code="disabled",
            )
        if not passages:
            return self.fail(f"no passage matches {args.query!r}; try other keywords")
        return self.result(format_passages(passages))


def retrieved_passages(text: str) -> dict[str, str]:
    """Search output read back: each passage line's citation id and its text (the title too).

    Only lines that start with an id count, so an answer that mentions an id is no passage.
    """
    passages: dict[str, str] = {}
    for match in _PASSAGE_LINE.finditer(text):
        passages.setdefault(match.group(1), match.group(2))
    return passages


def content_words(text: str) -> set[str]:
    """Lower-case words and numbers of ``text``, without stop words and citation ids."""
    text = re.sub(r"\[[^\]]*\]", " ", text.lower())
    return {w for w in _WORD.findall(text) if w not in _STOPWORDS}


def supporting(answer: str, passages: dict[str, str]) -> list[tuple[str, int]]:
    """The passages that support ``answer``, most shared content words first: those sharing at
    least ``MIN_SHARED_WORDS`` words with it, and at least half as many as the best one."""
    words = content_words(answer)
    shared = [(cid, len(words & content_words(text))) for cid, text in passages.items()]
    best = max((n for _, n in shared), default=0)
    found = [(cid, n) for cid, n in shared if n >= max(MIN_SHARED_WORDS, (best + 1) // 2)]
    return sorted(found, key=lambda item: -item[1])


def cite_input(answer_step: str, search_step: str) -> str:
    """The ``cite`` step's input: the answer, then the passages, both filled in by the
    coordinator (``{{steps.<id>}}``)."""
    return (
        f"{ANSWER_MARK}\n{{{{steps.{answer_step}}}}}\n{PASSAGES_MARK}\n{{{{steps.{search_step}}}}}"
    )


class CiteArgs(ToolArgs):
    """The answer and the passages it may cite, as ``cite_input`` lays them out."""

    text: str = Field(
        min_length=1,
        max_length=4000,
        description=f"'{ANSWER_MARK}', the answer, '{PASSAGES_MARK}', the search results.",
    )


class CiteTool(TypedTool[CiteArgs]):
    """Post-hoc attribution: the answer with the ids of the retrieved passages that support it
    appended (by content words shared with each passage); failing when none does.

    Citations the answer wrote itself are dropped first: what is cited is decided here, from
    what was retrieved, not by the model.
    """

    name = "cite"
    description = "Append to an answer the citation ids of the retrieved passages supporting it."
    args_model = CiteArgs
    timeout_s = 5.0
    uses_workspace = False

    async def run(self, args: CiteArgs, ctx: ToolContext) -> ToolResult:
        """The answer followed by its citations, or why it cannot be attributed."""
        head, mark, passages_text = args.text.rpartition(f"\n{PASSAGES_MARK}\n")
        if not mark or not head.startswith(ANSWER_MARK):
            return self.fail(
                f"the input must be '{ANSWER_MARK}', the answer, '{PASSAGES_MARK}', the passages",
                code="bad_arguments",
            )
        answer = re.sub(r"\s*\[[\w./-]+\.md#[\w-]+\]", "", head[len(ANSWER_MARK) :]).strip()
        passages = retrieved_passages(passages_text)
        if not answer:
            return self.fail("the answer is empty")
        if not passages:
            return self.fail("no passage was retrieved, so nothing can be cited")
        found = supporting(answer, passages)
        if not found:
            listed = ", ".join(f"[{c}]" for c in passages)
            return self.fail(
                f"no retrieved passage ({listed}) supports the answer {answer!r}: it shares "
                f"fewer than {MIN_SHARED_WORDS} content words with each"
            )
        return self.result(f"{answer} " + " ".join(f"[{cid}]" for cid, _ in found))


class SupportedArgs(ToolArgs):
    """What the reviewer hands a predicate: the output, the step's input and its dependencies'
    outputs."""

    output: str = Field(description="The answer under review.")
    input: str = Field(default="", description="The step's input (its 'Question:' line).")
    inputs: dict[str, str] = Field(
        default_factory=dict, description="Outputs of earlier steps (the search results)."
    )


class SupportedByRetrievedTool(TypedTool[SupportedArgs]):
    """Predicate: a retrieved passage supports the answer (the test ``cite`` applies, not
    counting the words of the question, which an answer could merely repeat), so an answer
    that ignores the passages goes back to the model before anything is cited."""

    name = "supported_by_retrieved"
    description = "Succeeds when a retrieved passage shares enough content words with the text."
    args_model = SupportedArgs
    timeout_s = 5.0
    uses_workspace = False

    async def run(self, args: SupportedArgs, ctx: ToolContext) -> ToolResult:
        """ok with the supporting ids, or what to do instead."""
        passages = retrieved_passages("\n".join(args.inputs.values()))
        question = next(
            (line for line in args.input.splitlines() if line.startswith("Question:")), ""
        )
        asked = content_words(question)
        found = supporting(" ".join(sorted(content_words(args.output) - asked)), passages)
        if not found:
            return self.fail(
                "the answer does not use the passages: answer with the words of the passage "
                "that answers the question"
            )
        return self.result("supported by " + ", ".join(cid for cid, _ in found))


class CitesRetrievedArgs(ToolArgs):
    """What the reviewer hands a predicate: the output and its dependencies' outputs."""

    output: str = Field(description="The answer under review.")
    inputs: dict[str, str] = Field(
        default_factory=dict, description="Outputs of earlier steps (the search results)."
    )


class CitesRetrievedTool(TypedTool[CitesRetrievedArgs]):
    """Predicate: the answer cites at least one passage the search step returned, and none that
    it did not (no invented sources)."""

    name = "cites_retrieved"
    description = "Succeeds when the text cites only, and at least one of, the retrieved passages."
    args_model = CitesRetrievedArgs
    timeout_s = 5.0

    async def run(self, args: CitesRetrievedArgs, ctx: ToolContext) -> ToolResult:
        """ok, or what to cite instead."""
        retrieved = list(retrieved_passages("\n".join(args.inputs.values())))
        cited = parse_citations(args.output)
        listed = ", ".join(f"[{c}]" for c in retrieved) or "(nothing was retrieved)"
        invented = [c for c in cited if c not in retrieved]
        if invented:
            return self.fail(
                f"the answer cites [{invented[0]}], which the search did not return; cite one "
                f"of {listed}"
            )
        if not cited:
            return self.fail(f"the answer cites no source; end it with one of {listed}")
        return self.result(f"cites {', '.join(cited)}")


def rag_tools() -> list[TypedTool[Any]]:
    """The ``agents.tools.custom`` factory: the tools above, searching the named index actor."""
    return [DocsSearchTool(), CiteTool(), SupportedByRetrievedTool(), CitesRetrievedTool()]
