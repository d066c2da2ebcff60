"""The RAG tools: ``docs_search`` (retrieve labelled passages) and ``cites_retrieved`` (a
reviewer predicate: the answer cites at least one retrieved passage and nothing else).

Enable them with ``agents.tools.custom: ["examples.rag.tools:rag_tools"]``.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from agents._toolkit import ToolArgs, ToolContext, ToolResult, TypedTool
from examples.rag.citations import parse_citations
from examples.rag.index import INDEX_ACTOR, Passage, RayDocsIndex, Searcher

MAX_PASSAGE_CHARS = 240
"""Longest passage text in a search result: small prompts leave room for a small context."""


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
        retrieved = parse_citations("\n".join(args.inputs.values()))
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
    """The ``agents.tools.custom`` factory: both tools, searching the named index actor."""
    return [DocsSearchTool(), CitesRetrievedTool()]
