"""A zero-latency scripted model for benchmarks: valid structured output, no sleeps, no network.

Agents running in Ray actors build it through ``agents.ModelEndpoint.client``
(``"bench.scripted_model:scripted_client"``), so the repository root must be on the workers'
``PYTHONPATH`` (``bench/orchestration.py`` sets it through ``ray.init(runtime_env=...)``).

What it answers, by the structured output the agent asks for (``ModelRequest.schema_name``):

- ``plan``: a chain of ``steps`` answer steps (step ``i`` depends on step ``i - 1``), with empty
  inputs so the executor never reaches for the calculator. ``steps`` comes from the endpoint's
  model id, ``scripted-<steps>-steps`` (5 when the id does not say).
- ``step_answer``: a short fixed answer (steps and the final answer alike).
- ``review``: approve.

Anything else is a call the benchmark did not expect: it raises, so a changed agent shows up as a
failed task instead of a silently different workload.
"""

from __future__ import annotations

import json
import re
from typing import Any

from agents import ModelEndpoint, ModelReply, ModelRequest
from protocols import AgentError

DEFAULT_STEPS = 5
MODEL_ID = re.compile(r"^scripted-(\d+)-steps$")


def model_id(steps: int) -> str:
    """The endpoint ``model`` id that asks for plans of ``steps`` steps."""
    return f"scripted-{steps}-steps"


def plan_draft(steps: int) -> dict[str, Any]:
    """The planner's draft: a chain of ``steps`` answer steps, valid under ``plan_schema``."""
    return {
        "steps": [
            {
                "description": f"benchmark step {i}",
                "tool": "answer",
                "input": "",
                "depends_on": [i - 1] if i > 1 else [],
            }
            for i in range(1, steps + 1)
        ]
    }


class ScriptedBenchModel:
    """A ``ModelClient`` that answers at once from fixed replies; see the module docstring.

    Args:
        steps: Steps in every plan it proposes.
    """

    def __init__(self, *, steps: int = DEFAULT_STEPS) -> None:
        self._replies: dict[str, str] = {
            "plan": json.dumps(plan_draft(steps)),
            "step_answer": json.dumps({"answer": "done"}),
            "review": json.dumps({"decision": "approve", "feedback": ""}),
        }
        self.calls = 0

    async def complete(self, request: ModelRequest) -> ModelReply:
        """Answers one request from the fixed replies; raises on a kind it does not know."""
        self.calls += 1
        content = self._replies.get(request.schema_name)
        if content is None:
            raise AgentError(
                f"the scripted benchmark model has no reply for {request.schema_name!r}",
                code="unexpected_model_call",
                retryable=False,
            )
        return ModelReply(
            content=content, prompt_tokens=1, completion_tokens=1, model="scripted-bench"
        )


def scripted_client(endpoint: ModelEndpoint) -> ScriptedBenchModel:
    """``ModelEndpoint.client`` factory: plans take the step count in ``endpoint.model``."""
    match = MODEL_ID.match(endpoint.model)
    return ScriptedBenchModel(steps=int(match.group(1)) if match else DEFAULT_STEPS)
