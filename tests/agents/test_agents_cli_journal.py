"""The journal commands of the CLI: tasks, status, approvals, approve, cancel, audit, replay,
compact — against a journal that an in-process coordinator writes."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
import yaml

from agents import main
from agents._journal import JournalConfig, SqliteJournal
from protocols import TaskCompleted, TaskFailed
from tests.agents.test_agents_durable import CHAIN, GATED, _crew, _task, _until


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "troupe.yaml"
    path.write_text(yaml.safe_dump({"journal": {"data_dir": str(tmp_path / "journal")}}))
    return path


def _journal(tmp_path: Path) -> SqliteJournal:
    return SqliteJournal(JournalConfig(data_dir=tmp_path / "journal", synchronous="NORMAL"))


def _finished(tmp_path: Path) -> None:
    crew = _crew(CHAIN)
    outcome = asyncio.run(crew.coordinator(_journal(tmp_path)).run(_task()))
    assert isinstance(outcome, TaskCompleted)


def test_status_audit_replay_and_tasks_of_a_finished_task(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _finished(tmp_path)
    assert main(["tasks", "--config", str(config)]) == 0
    assert "t1" in capsys.readouterr().out
    assert main(["status", "t1", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "t1: completed" in out and "committed s2" in out
    assert main(["audit", "t1", "--config", str(config)]) == 0
    assert "journal intact" in capsys.readouterr().out
    assert main(["replay", "t1", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "same result as recorded" in out and "0 model calls" in out


def test_audit_finds_an_edited_entry(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _finished(tmp_path)
    with sqlite3.connect(tmp_path / "journal" / "journal.sqlite3") as db:
        db.execute(
            "UPDATE entries SET payload = replace(payload, 'two one done', 'two 1 done') "
            "WHERE task_id = 't1' AND kind = 'step.result'"
        )
    assert main(["audit", "t1", "--config", str(config)]) == 1
    assert "DAMAGED" in capsys.readouterr().out


def test_unknown_tasks_and_missing_journals_are_clear_errors(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["tasks", "--config", str(config)]) == 2
    assert "no journal in" in capsys.readouterr().err
    _finished(tmp_path)
    assert main(["status", "nope", "--config", str(config)]) == 2
    assert "no task 'nope'" in capsys.readouterr().err
    assert main(["approve", "t1", "s2", "--config", str(config)]) == 2
    assert "no step 's2' waiting for approval" in capsys.readouterr().err
    assert main(["cancel", "t1", "--config", str(config)]) == 2
    assert "not running (completed)" in capsys.readouterr().err


def test_approve_from_the_cli_resumes_the_waiting_task(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async def scenario() -> TaskCompleted | TaskFailed:
        crew = _crew(GATED)
        coordinator = crew.coordinator(_journal(tmp_path))
        await coordinator.submit(_task())
        await _until(lambda: bool(coordinator.pending_approvals()))
        assert main(["approvals", "--config", str(config)]) == 0
        assert "t1 s2 [ledger]" in capsys.readouterr().out
        code = main(
            [
                "approve",
                "t1",
                "s2",
                "--edit",
                "send it now",
                "--by",
                "carol",
                "--config",
                str(config),
            ]
        )
        assert code == 0
        outcome = await coordinator.wait("t1", timeout_s=5)
        assert [a.step.input for a in crew.executor.calls if a.step.id == "s2"] == ["send it now"]
        return outcome

    assert isinstance(asyncio.run(scenario()), TaskCompleted)
    assert main(["status", "t1", "--config", str(config)]) == 0
    assert "approval of s2: edit by carol" in capsys.readouterr().out


def test_cancel_from_the_cli_stops_the_task(tmp_path: Path, config: Path) -> None:
    async def scenario() -> TaskCompleted | TaskFailed:
        crew = _crew(CHAIN)
        crew.executor.hold["s2"] = asyncio.Event()
        coordinator = crew.coordinator(_journal(tmp_path))
        await coordinator.submit(_task())
        await _until(lambda: crew.executor.ran()["s2"] == 1)
        assert main(["cancel", "t1", "--reason", "stop", "--config", str(config)]) == 0
        return await coordinator.wait("t1", timeout_s=5)

    outcome = asyncio.run(scenario())
    assert isinstance(outcome, TaskFailed) and outcome.cancelled


def test_compact_prunes_finished_tasks(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _finished(tmp_path)
    assert main(["compact", "--keep-last", "0", "--config", str(config)]) == 0
    assert "removed 1 finished task(s)" in capsys.readouterr().out
    assert _journal(tmp_path).entries("t1") == []


def test_run_needs_a_goal_or_a_workflow(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run"]) == 2
    assert "give a goal to run, or --workflow FILE" in capsys.readouterr().err
    assert main(["run", "x", "--input", "a=b"]) == 2
    assert "--input is for --workflow" in capsys.readouterr().err
