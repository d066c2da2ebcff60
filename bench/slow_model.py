"""The benchmark's scripted model, made slow on demand: keeps tasks in flight without a tool.

``bench/durability.py`` needs 100 tasks in flight when it kills the coordinator. A real task is
in flight because its model is slow, so this model is ``bench.scripted_model``'s (same plans,
answers and reviews, zero latency) except that a step answer waits when the task's goal asks
for it: a goal containing ``[pause 2.5s]`` makes every ``step_answer`` of that task sleep 2.5 s
(``asyncio.sleep``: the executor actor keeps serving other tasks meanwhile). Goals without the
marker answer at once, so one team serves the zero-latency overhead runs and the slow ones.

The pause is read from the ``Goal:`` line the executor writes into its prompt, so it survives
restarts and re-sends: the model answers from the request alone.
"""

from __future__ import annotations

import asyncio
import re

from agents import ModelEndpoint, ModelReply, ModelRequest
from bench.scripted_model import DEFAULT_STEPS, MODEL_ID, ScriptedBenchModel

PAUSE = re.compile(r"^Goal: .*\[pause (\d+(?:\.\d+)?)s\]", re.MULTILINE)


def pause_marker(seconds: float) -> str:
    """The text to put in a goal so that each of its step answers takes ``seconds``."""
    return f"[pause {seconds:g}s]"


def requested_pause(request: ModelRequest) -> float:
    """Seconds the request's task asks each step answer to take (0 without the marker)."""
    text = "\n".join(str(message.get("content", "")) for message in request.messages)
    found = PAUSE.search(text)
    return float(found.group(1)) if found else 0.0


class SlowScriptedModel(ScriptedBenchModel):
    """``ScriptedBenchModel`` whose step answers sleep as long as the goal's marker says.

    Args:
        steps: Steps in every plan it proposes.
    """

    async def complete(self, request: ModelRequest) -> ModelReply:
        """Answers like ``ScriptedBenchModel``, after the goal's pause for step answers."""
        if request.schema_name == "step_answer":
            pause = requested_pause(request)
            if pause:
                await asyncio.sleep(pause)
        return await super().complete(request)


def slow_client(endpoint: ModelEndpoint) -> SlowScriptedModel:
    """``ModelEndpoint.client`` factory: plans take the step count in ``endpoint.model``."""
    match = MODEL_ID.match(endpoint.model)
    return SlowScriptedModel(steps=int(match.group(1)) if match else DEFAULT_STEPS)
