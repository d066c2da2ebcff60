"""Which tools a team has: the built-ins it turned on, its custom tools, and ``answer``.

``answer`` is the model itself: the executor asks the model to carry out the step. Every other
tool is a ``TypedTool`` (``agents._toolkit``) with a typed, checked input; none of them trusts
the text the model wrote.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import Any

from agents._arithmetic import calculate, format_number
from agents._builtin_tools import ToolsSettings, builtin_tools
from agents._toolkit import ToolRegistry, ToolRunner, TypedTool
from memory import EpisodicMemory
from protocols import ConfigurationError

__all__ = [
    "MODEL_TOOL",
    "calculate",
    "default_tools",
    "describe_tools",
    "format_number",
    "load_custom_tools",
    "plan_tools",
]

MODEL_TOOL = "answer"
"""The pseudo-tool that means: the model carries out the step."""

_ANSWER_LINE = f"- {MODEL_TOOL}: think and write the answer to the step in words"


def default_tools(
    settings: ToolsSettings | None = None,
    *,
    memory: EpisodicMemory | None = None,
    runner: ToolRunner | None = None,
) -> ToolRegistry:
    """The registry of a team's tools: the configured built-ins, then the custom tools.

    Args:
        settings: The tools branch of the settings (default: the calculator only).
        memory: The memory ``memory_search`` searches (without one it is left out).
        runner: Where tools run (default: in this process).

    Raises:
        ConfigurationError: When a custom tool cannot be loaded, two tools share a name, or a
            tool is named ``answer`` (the model itself).
    """
    settings = settings or ToolsSettings()
    tools = [*builtin_tools(settings, memory=memory), *load_custom_tools(settings.custom)]
    if any(tool.name == MODEL_TOOL for tool in tools):
        raise ConfigurationError(
            f"a tool is named {MODEL_TOOL!r}, the name of the model itself; rename the tool"
        )
    return ToolRegistry(tools, runner=runner)


def load_custom_tools(paths: Iterable[str]) -> list[TypedTool[Any]]:
    """Imports each ``module:callable`` and calls it; it returns a tool or a list of tools.

    Raises:
        ConfigurationError: Naming the path, when it does not import, is not callable, or
            returns something other than ``TypedTool`` instances.
    """
    tools: list[TypedTool[Any]] = []
    for path in paths:
        module_name, _, attribute = path.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as exc:
            raise ConfigurationError(
                f"custom tool {path!r} cannot be loaded ({exc}); agents.tools.custom must name "
                "an importable module:callable on every node"
            ) from None
        if not callable(factory):
            raise ConfigurationError(f"custom tool {path!r} is not callable")
        made = factory()
        found = list(made) if isinstance(made, list | tuple) else [made]
        wrong = [type(t).__name__ for t in found if not isinstance(t, TypedTool)]
        if wrong or not found:
            raise ConfigurationError(
                f"custom tool {path!r} returned {wrong[0] if wrong else 'no tools'}; it must "
                "return a TypedTool or a list of them"
            )
        tools.extend(found)
    return tools


def plan_tools(registry: ToolRegistry, allowed: Iterable[str] | None = None) -> list[str]:
    """Tool names a plan may use: ``answer`` first, then the allowed registered tools, sorted.

    Args:
        registry: The team's tools.
        allowed: The executors' allow-list; None means every registered tool.
    """
    names = registry.names()
    if allowed is not None:
        keep = set(allowed)
        names = [n for n in names if n in keep]
    return [MODEL_TOOL, *names]


def describe_tools(registry: ToolRegistry, names: Iterable[str]) -> str:
    """One line per tool, for the planner's prompt; ``answer`` last."""
    lines = []
    for name in names:
        tool = registry.get(name)
        if tool is not None:
            lines.append(f"- {tool.name}: {tool.description}")
    lines.append(_ANSWER_LINE)
    return "\n".join(lines)
