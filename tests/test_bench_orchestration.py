"""The orchestration benchmark runs, end to end, on tiny sizes; and its scripted model is valid."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from agents import ModelEndpoint, ModelRequest, draft_to_plan, plan_schema
from bench.scripted_model import model_id, plan_draft, scripted_client
from protocols import AgentError

ROOT = Path(__file__).resolve().parent.parent
FIELDS = (
    "step_overhead_p50_ms",
    "step_overhead_p99_ms",
    "tasks_per_s_1",
    "tasks_per_s_10",
    "tasks_per_s_100",
    "peak_rss_mb",
)


def test_the_scripted_plan_is_valid_under_the_planners_schema() -> None:
    tools = ["answer", "calculator"]
    draft = plan_draft(5)
    jsonschema.validate(draft, plan_schema(tools, max_steps=5, max_chars=120))
    plan = draft_to_plan(draft, tools=tools, max_steps=5)
    assert [s.id for s in plan.steps] == ["s1", "s2", "s3", "s4", "s5"]
    assert plan.steps[4].depends_on == ("s4",)


def test_the_scripted_model_takes_its_step_count_from_the_endpoint_and_refuses_the_unknown() -> (
    None
):
    client = scripted_client(ModelEndpoint(client="bench.scripted_model:x", model=model_id(3)))
    ask = ModelRequest(messages=(), max_tokens=10, schema_name="plan")
    reply = asyncio.run(client.complete(ask))
    assert len(json.loads(reply.content)["steps"]) == 3
    with pytest.raises(AgentError, match="no reply for 'expression'"):
        asyncio.run(
            client.complete(ModelRequest(messages=(), max_tokens=10, schema_name="expression"))
        )


@pytest.mark.ray
def test_the_quick_benchmark_prints_positive_numbers() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [
        sys.executable,
        str(ROOT / "bench" / "orchestration.py"),
        "--quick",
        "--single=3",
        "--warmup=1",
        "--rounds=1",
        # The team's tests on Ray run with lanes (the default); here every hop is a Ray call.
        "--lanes=off",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    for field in FIELDS:
        assert result[field] > 0, (field, result)
    assert result["step_overhead_p99_ms"] >= result["step_overhead_p50_ms"]
    assert result["steps_per_task"] == 6
    assert result["direct_lanes"] is False
    assert result["tasks_per_phase"] == {"1": 3, "10": 10, "100": 100}
    # The driver and the Ray it started: GCS, raylet and at least the team's actors.
    assert result["peak_rss_processes"] >= 8
    assert result["python_calibration_ms_start"] > 0 and result["python_calibration_ms_end"] > 0
