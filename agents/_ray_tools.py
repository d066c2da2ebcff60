"""Runs heavy tools as Ray tasks with their own resources (CPUs, GPUs, memory).

This is hosting code: it is handed to a ``ToolRegistry`` as its ``ToolRunner``; the agent
that calls the registry never calls ``.remote()`` itself.
"""

from __future__ import annotations

import asyncio
from typing import Any

import ray
from ray.exceptions import RayError

from agents._toolkit import LocalToolRunner, ToolArgs, ToolContext, ToolResult, TypedTool
from protocols import TroupeError


def _run_in_task(tool: TypedTool[Any], args: ToolArgs, ctx: ToolContext) -> ToolResult:
    # A Ray task has no running event loop: give the coroutine its own. Failures become
    # results here, so no pickled traceback travels back.
    try:
        return asyncio.run(tool.run(args, ctx))
    except TroupeError as exc:
        return tool.fail(exc.message)
    except Exception as exc:
        return tool.fail(f"{type(exc).__name__}: {exc}"[:500])


_remote_tool = ray.remote(_run_in_task)


class RayToolRunner:
    """Runs a tool that declares ``resources`` as a Ray task reserving them; others locally.

    The tool object is pickled into the task, so it must be picklable (no open clients or
    handles held in attributes). The registry's timeout applies; on timeout the task is
    cancelled (forcefully: the worker process is killed).

    Args:
        max_retries: Ray-level retries when the worker dies; 0 by default, because the
            executor's attempt counter owns retries and a side effect must not run twice
            silently.
    """

    def __init__(self, *, max_retries: int = 0) -> None:
        self._local = LocalToolRunner()
        self._max_retries = max_retries

    async def run(self, tool: TypedTool[Any], args: ToolArgs, ctx: ToolContext) -> ToolResult:
        """Runs ``tool`` where its resources say."""
        if tool.resources is None:
            return await self._local.run(tool, args, ctx)
        res = tool.resources
        options: dict[str, Any] = {
            "num_cpus": res.num_cpus,
            "num_gpus": res.num_gpus,
            "max_retries": self._max_retries,
            "name": f"tool:{tool.name}:{ctx.idempotency_key}",
        }
        if res.memory_mb is not None:
            options["memory"] = res.memory_mb * 1024 * 1024
        ref = _remote_tool.options(**options).remote(tool, args, ctx)
        try:
            result: ToolResult = await ref
        except asyncio.CancelledError:
            ray.cancel(ref, force=True)
            raise
        except RayError as exc:
            return tool.fail(f"the Ray task running the tool failed: {type(exc).__name__}")
        return result
