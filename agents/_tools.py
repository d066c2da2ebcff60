"""Tools an executor may use, and the registry that says which exist.

``answer`` is the model itself: the executor asks the model to carry out the step. Every other
tool is code with a typed, checked input; none of them trusts the text the model wrote.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from agents._arithmetic import calculate, format_number
from protocols import AgentError

MODEL_TOOL = "answer"
"""The pseudo-tool that means: the model carries out the step."""


class Tool(Protocol):
    """A tool: a name, what it does (shown to the planner), and how to run it on a text input."""

    name: str
    description: str

    async def run(self, argument: str) -> str:
        """Runs the tool; raises ``AgentError`` with what to fix when the argument is bad."""
        ...


class ToolRegistry:
    """The tools known to a team. Unknown names are an error, never a silent no-op."""

    def __init__(self, tools: Iterable[Tool]):
        self._tools = {tool.name: tool for tool in tools}

    def names(self) -> list[str]:
        """Names the planner may use, the model pseudo-tool first."""
        return [MODEL_TOOL, *sorted(self._tools)]

    def describe(self) -> str:
        """One line per tool, for prompts."""
        lines = [f"- {t.name}: {t.description}" for t in self._tools.values()]
        lines.append(f"- {MODEL_TOOL}: think and write the answer to the step in words")
        return "\n".join(lines)

    def get(self, name: str) -> Tool:
        """The tool called ``name``."""
        try:
            return self._tools[name]
        except KeyError:
            raise AgentError(
                f"unknown tool {name!r}; known tools: {', '.join(self.names())}",
                code="unknown_tool",
            ) from None


class Calculator:
    """Arithmetic on numbers: + - * / // % ** and parentheses. Parsed, never evaluated as code."""

    name = "calculator"
    description = "arithmetic on numbers, e.g. input '17 * 23 + 4' (operators + - * / // % **)"

    async def run(self, argument: str) -> str:
        """Computes the expression and returns the number as text."""
        return format_number(calculate(argument))


def default_tools() -> ToolRegistry:
    """The built-in tools of this release."""
    return ToolRegistry([Calculator()])
