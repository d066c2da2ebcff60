"""Markdown documents cut into chunks, each keeping the file and the heading it came from."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

_HEADING = re.compile(r"^(#{1,3})\s+(.+?)\s*#*\s*$")
_NOT_SLUG = re.compile(r"[^\w\- ]")


class Chunk(BaseModel):
    """A passage of one document under one heading; ``citation`` names it, e.g.
    ``backup.md#retention``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: str = Field(description="Path of the document, relative to the docs folder (posix).")
    anchor: str = Field(description="Slug of the heading the passage sits under.")
    title: str = Field(description="The heading path, e.g. 'Backups > Retention'.")
    text: str = Field(min_length=1, description="The passage itself.")
    part: int = Field(default=0, ge=0, description="Index of the piece when a section is split.")

    @property
    def citation(self) -> str:
        """``source#anchor``: what an answer writes in brackets to cite this passage."""
        return f"{self.source}#{self.anchor}"


def slugify(heading: str) -> str:
    """The GitHub-style anchor of a heading: lower case, punctuation dropped, spaces to '-'."""
    slug = _NOT_SLUG.sub("", heading.strip().lower()).replace(" ", "-")
    return slug or "section"


def chunk_markdown(text: str, *, source: str, max_chars: int = 600) -> list[Chunk]:
    """Cuts one Markdown document at its headings (levels 1-3).

    Text before the first heading belongs to the document (anchor: the file's stem). A section
    longer than ``max_chars`` is split between paragraphs; its pieces share the anchor. Repeated
    headings get ``-1``, ``-2`` suffixes, as GitHub's anchors do. Headings inside fenced code
    blocks are text.
    """
    sections: list[tuple[str, str, list[str]]] = []  # (anchor, title, lines)
    path: list[str] = []
    seen: dict[str, int] = {}
    current: tuple[str, str, list[str]] = (slugify(Path(source).stem), Path(source).stem, [])
    fenced = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        match = None if fenced else _HEADING.match(line)
        if match is None:
            current[2].append(line)
            continue
        sections.append(current)
        level, heading = len(match.group(1)), match.group(2).strip()
        path = [*path[: level - 1], heading]
        anchor = slugify(heading)
        count = seen.get(anchor, 0)
        seen[anchor] = count + 1
        current = (f"{anchor}-{count}" if count else anchor, " > ".join(path), [])
    sections.append(current)
    chunks = []
    for anchor, title, lines in sections:
        for part, piece in enumerate(_pieces("\n".join(lines), max_chars)):
            chunks.append(Chunk(source=source, anchor=anchor, title=title, text=piece, part=part))
    return chunks


def _pieces(body: str, max_chars: int) -> list[str]:
    """Paragraphs packed into pieces of at most ``max_chars`` (a longer paragraph stays whole)."""
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", body) if p.strip()]
    pieces: list[str] = []
    for paragraph in paragraphs:
        if pieces and len(pieces[-1]) + 1 + len(paragraph) <= max_chars:
            pieces[-1] = f"{pieces[-1]}\n{paragraph}"
        else:
            pieces.append(paragraph)
    return pieces


def load_docs(directory: Path, *, max_chars: int = 600) -> list[Chunk]:
    """Every ``*.md`` file under ``directory`` (sorted, recursive), chunked.

    Raises:
        FileNotFoundError: When the directory holds no Markdown file.
    """
    files = sorted(directory.rglob("*.md"))
    if not files:
        raise FileNotFoundError(f"no Markdown (*.md) files under {directory}")
    chunks: list[Chunk] = []
    for file in files:
        source = file.relative_to(directory).as_posix()
        chunks.extend(chunk_markdown(file.read_text(), source=source, max_chars=max_chars))
    return chunks
