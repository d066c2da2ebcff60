"""The troupe CLI refuses bad input with a clear message before starting anything."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from agents import TroupeSettings, main, render_outcome
from agents._cli import _check_port_free
from protocols import (
    ConfigurationError,
    Step,
    StepRecord,
    TaskCompleted,
    TraceEvent,
)


def test_blank_goal_is_refused_with_the_reason(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "   "]) == 2
    err = capsys.readouterr().err
    assert "troupe: error: cannot run this task" in err
    assert "goal must contain text" in err


def test_bad_budget_flag_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "hello", "--max-steps", "0"]) == 2
    assert "max_steps: Input should be greater than or equal to 1" in capsys.readouterr().err


def test_bad_settings_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "troupe.yaml"
    config.write_text("budget:\n  max_steps: many\n")
    assert main(["run", "hello", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert str(config) in err and "budget.max_steps" in err


def test_a_busy_port_is_refused_with_what_to_do() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(ConfigurationError, match=f"port {port} on 127.0.0.1 is in use"):
            _check_port_free("127.0.0.1", port)
        with pytest.raises(ConfigurationError, match="set serve.direct_port in the settings"):
            _check_port_free("127.0.0.1", port, setting="direct_port")


def test_outcome_rendering_shows_steps_reviews_and_answer() -> None:
    from datetime import UTC, datetime

    step = Step(id="s1", description="compute", tool="calculator", input="2+3")
    outcome = TaskCompleted(
        task_id="t1",
        goal="add",
        final_answer="5",
        steps=(StepRecord(step=step, output="5", decision="approve", approved=True),),
        trace=(
            TraceEvent(seq=0, at=datetime.now(UTC), sender="user", topic="t", message_type="x"),
            TraceEvent(
                seq=1,
                at=datetime.now(UTC),
                sender="planner",
                topic="agents.planner",
                message_type="plan.proposed",
                summary="memory plan, 1 step(s): s1 calculator: compute",
            ),
        ),
    )
    text = render_outcome(outcome, elapsed_s=1.0, trace=True)
    assert "t1: completed" in text
    assert "s1 [calculator] compute" in text and "input:  2+3" in text
    assert "final answer: 5" in text
    assert "plan: memory plan, 1 step(s)\n" in text
    assert "#0" in text
    assert TroupeSettings().serve.port == 8000


def test_protocol_schema_prints_the_committed_snapshot(capsys: pytest.CaptureFixture[str]) -> None:
    import json
    from importlib import resources

    assert main(["protocol", "schema"]) == 0
    printed = json.loads(capsys.readouterr().out)
    snapshot = json.loads(resources.files("protocols").joinpath("schema", "v1.json").read_text())
    assert printed == snapshot, "run `troupe protocol schema > protocols/schema/v1.json`"
