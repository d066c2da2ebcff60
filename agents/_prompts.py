"""Prompt templates live as files; each use records the template's name and content hash."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from string import Template


@dataclass(frozen=True)
class Prompt:
    """A loaded template: ``$name`` placeholders, filled with ``render``."""

    name: str
    text: str

    @property
    def version(self) -> str:
        """``name@sha256[:12]`` of the template text, recorded with every model call."""
        return f"{self.name}@{hashlib.sha256(self.text.encode()).hexdigest()[:12]}"

    def render(self, **values: str) -> str:
        """Fills every placeholder; a missing value is a ``KeyError`` naming it."""
        return Template(self.text).substitute(values)


@cache
def load_prompt(name: str) -> Prompt:
    """Reads ``agents/prompts/<name>.txt``."""
    text = resources.files("agents").joinpath("prompts", f"{name}.txt").read_text()
    return Prompt(name=name, text=text.strip())
