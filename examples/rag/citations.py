"""Citations in answers: ``[file.md#heading]``, found in text and resolved to files."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from examples.rag.chunks import Chunk

CITATION_PATTERN = r"\[([\w./-]+\.md)#([\w-]+)\]"
"""A citation as answers write it; also the reviewer's ``regex`` check."""
_CITATION = re.compile(CITATION_PATTERN)


def parse_citations(text: str) -> list[str]:
    """The ``source#anchor`` ids cited in ``text``, in order of first appearance, each once."""
    found = (f"{m.group(1)}#{m.group(2)}" for m in _CITATION.finditer(text))
    return list(dict.fromkeys(found))


class Source(BaseModel):
    """A cited id resolved against the docs: the file and heading, or unknown."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    citation: str = Field(description="source#anchor as cited.")
    path: Path | None = Field(description="The document's file; None when nothing matches.")
    title: str = Field(default="", description="The heading path of the cited section.")

    @property
    def known(self) -> bool:
        """Whether the citation names a real section of the docs."""
        return self.path is not None


def resolve(citations: Iterable[str], chunks: Iterable[Chunk], *, docs_dir: Path) -> list[Source]:
    """Each citation with its file under ``docs_dir`` and its heading (unknown ones kept)."""
    sections = {c.citation: c for c in chunks}
    resolved = []
    for citation in citations:
        chunk = sections.get(citation)
        if chunk is None:
            resolved.append(Source(citation=citation, path=None))
        else:
            path = docs_dir / chunk.source
            resolved.append(Source(citation=citation, path=path, title=chunk.title))
    return resolved
