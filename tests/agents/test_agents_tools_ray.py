"""Heavy tools run as Ray tasks that reserve the tool's own resources."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from agents._builtin_tools import CalculatorTool
from agents._ray_tools import RayToolRunner
from agents._toolkit import (
    ToolArgs,
    ToolContext,
    ToolPolicy,
    ToolRegistry,
    ToolResources,
    ToolResult,
    TypedTool,
)


class WhereTool(TypedTool[ToolArgs]):
    """Says which process ran it and what Ray reserved for it."""

    name = "where"
    description = "Report the process and resources."
    args_model = ToolArgs
    resources = ToolResources(num_cpus=0.5)

    async def run(self, args: ToolArgs, ctx: ToolContext) -> ToolResult:
        import ray

        assigned = ray.get_runtime_context().get_assigned_resources()
        return self.result(json.dumps({"pid": os.getpid(), "resources": assigned}))


class FailingHeavyTool(WhereTool):
    name = "failing"

    async def run(self, args: ToolArgs, ctx: ToolContext) -> ToolResult:
        raise RuntimeError("GPU out of memory")


@pytest.mark.ray
def test_tool_with_resources_runs_as_a_ray_task(ray_session: None, tmp_path: Path) -> None:
    registry = ToolRegistry(
        [WhereTool(), FailingHeavyTool(), CalculatorTool()], runner=RayToolRunner()
    )
    ctx = ToolContext(task_id="t", step_id="s", workspace=tmp_path)
    policy = ToolPolicy(registry.names())

    async def calls() -> list[ToolResult]:
        return list(
            await asyncio.gather(
                registry.call("where", {}, ctx, policy=policy),
                registry.call("failing", {}, ctx, policy=policy),
                registry.call("calculator", {"expression": "2+2"}, ctx, policy=policy),
            )
        )

    where, failing, local = asyncio.run(calls())
    assert where.ok, where.error
    report = json.loads(where.output)
    assert report["pid"] != os.getpid() and report["resources"] == {"CPU": 0.5}
    assert not failing.ok and failing.error == "RuntimeError: GPU out of memory"
    assert local.ok and local.output == "4"  # no resources declared: ran in this process
