"""The hiring tools on the committed sample data: parsing, skills, scoring, the candidate
check, the idempotent outbox, replies and interview slots."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from agents._executor import direct_arguments
from agents._toolkit import ToolContext, ToolPolicy, ToolRegistry, ToolResult
from examples.hiring.tools import (
    DATA_DIR,
    TOOL_NAMES,
    hiring_tools,
    read_candidates,
    read_outbox,
    skills_in,
)

REGISTRY = ToolRegistry(hiring_tools())
POLICY = ToolPolicy(REGISTRY.names())


def _call(
    name: str, step_input: str, workspace: Path, *, step: str = "s", attempt: int = 1
) -> ToolResult:
    """Runs a tool the way the executor runs a tool step: the step's input as arguments."""
    tool = REGISTRY.get(name)
    assert tool is not None
    arguments = direct_arguments(tool, step_input)
    assert arguments is not None, f"{name} cannot take {step_input[:80]!r} directly"
    ctx = ToolContext(task_id="hire-1", step_id=step, attempt=attempt, workspace=workspace)
    return asyncio.run(REGISTRY.call(name, arguments, ctx, policy=POLICY))


def _ok(name: str, step_input: str, workspace: Path, **kwargs: Any) -> str:
    result = _call(name, step_input, workspace, **kwargs)
    assert result.ok, result.error
    return result.output


@pytest.fixture(scope="module")
def ranking(tmp_path_factory: pytest.TempPathFactory) -> str:
    workspace = tmp_path_factory.mktemp("ws")
    job = _ok("parse_job", '{"file": "job.md"}', workspace)
    skills = _ok("extract_skills", f'{{"job": {job}}}', workspace)
    return _ok("score_candidates", f'{{"skills": {skills}, "top": 2}}', workspace)


def test_the_factory_makes_every_tool_and_only_send_is_high_impact() -> None:
    assert sorted(TOOL_NAMES) == REGISTRY.names()
    assert [t.name for t in hiring_tools() if t.impact == "high"] == ["send_outreach"]


def test_the_committed_data_has_six_cvs_with_names_and_emails() -> None:
    candidates = read_candidates(DATA_DIR / "cvs")
    assert len(candidates) == 6
    assert all(c.email.endswith("@example.com") for c in candidates)
    assert "Ana Lima" in [c.name for c in candidates]


def test_parse_job_splits_the_description(tmp_path: Path) -> None:
    job = json.loads(_ok("parse_job", '{"file": "job.md"}', tmp_path))
    assert job["title"] == "Senior Platform Engineer"
    assert job["company"] == "Acme Robotics"
    assert len(job["must_have"]) == 3 and job["must_have"][0] == "5+ years of Python in production"
    assert job["nice_to_have"] == ["PyTorch", "Terraform", "Prometheus and Grafana monitoring"]


@pytest.mark.parametrize(
    ("file", "error"),
    [("nope.md", "cannot read job description 'nope.md'"), ("../../README.md", "outside")],
)
def test_parse_job_refuses_missing_files_and_paths_outside_the_data(
    tmp_path: Path, file: str, error: str
) -> None:
    result = _call("parse_job", json.dumps({"file": file}), tmp_path)
    assert not result.ok and error in (result.error or "")


def test_extract_skills_maps_bullets_to_canonical_skills(tmp_path: Path) -> None:
    job = _ok("parse_job", '{"file": "job.md"}', tmp_path)
    skills = json.loads(_ok("extract_skills", f'{{"job": {job}}}', tmp_path))
    assert skills["must_have"] == ["Python", "Ray", "Kubernetes"]
    assert skills["nice_to_have"] == ["PyTorch", "Terraform", "Prometheus", "Grafana"]


def test_skill_matching_is_word_bounded() -> None:
    assert skills_in("We go to the array of k8s and Golang") == ["Kubernetes", "Go"]
    assert skills_in("Ray Serve, pythonic") == ["Ray"]


def test_scoring_ranks_the_obviously_best_cv_first(ranking: str, tmp_path: Path) -> None:
    result = json.loads(ranking)
    assert result["ranked"][:2] == ["Ana Lima", "Ben Okafor"]
    assert result["ranked"][-1] == "Chloe Martin"  # a frontend CV for a platform role
    assert result["scores"] == sorted(result["scores"], reverse=True)
    assert result["shortlist"] == [
        {
            "name": "Ana Lima",
            "matched": ["Python", "Ray", "Kubernetes", "PyTorch", "Prometheus", "Grafana"],
        },
        {"name": "Ben Okafor", "matched": ["Python", "Ray", "Kubernetes", "Terraform"]},
    ]
    assert len(ranking) < 600  # it goes into memory and into later steps' inputs


def test_scoring_never_shortlists_a_cv_missing_a_must_have(tmp_path: Path) -> None:
    job = _ok("parse_job", '{"file": "job.md"}', tmp_path)
    skills = _ok("extract_skills", f'{{"job": {job}}}', tmp_path)
    result = json.loads(_ok("score_candidates", f'{{"skills": {skills}, "top": 5}}', tmp_path))
    table = json.loads((tmp_path / "ranking.json").read_text())
    assert [row["name"] for row in table] == result["ranked"]
    # Elena (Go, Kubernetes, Terraform) is more similar than David (Python, Django) but lacks
    # Python and Ray: only the two with every must-have are shortlisted, even with top=5.
    assert [s["name"] for s in result["shortlist"]] == ["Ana Lima", "Ben Okafor"]
    for row in table[2:]:
        assert row["missing"] and not row["shortlisted"]
    assert table[0]["similarity"] > max(row["similarity"] for row in table[2:])


def test_pick_candidate_names_a_shortlisted_candidate_and_two_skills(
    ranking: str, tmp_path: Path
) -> None:
    first = _ok("pick_candidate", f'{{"ranking": {ranking}, "rank": 1}}', tmp_path)
    assert first == "Ana Lima, who knows Python and Ray"
    second = _ok("pick_candidate", f'{{"ranking": {ranking}, "rank": 2}}', tmp_path)
    assert second.startswith("Ben Okafor, who knows ")
    third = _call("pick_candidate", f'{{"ranking": {ranking}, "rank": 3}}', tmp_path)
    assert not third.ok and third.error == "only 2 candidate(s) are shortlisted"


@pytest.mark.parametrize(
    ("output", "error"),
    [
        ("Dear Ana, we would love to talk.", None),
        ("Dear Ana Lima, we would love to talk.", None),
        ("Dear Ben, we would love to talk.", "the message must be addressed to Ana Lima"),
        ("Dana Mauler, a great choice.", "the message must be addressed to Ana Lima"),
        ("Dear Ana, Ben Okafor says hi.", "the message is for Ana Lima; it must not name Ben"),
    ],
)
def test_names_candidate_checks_the_message_is_for_the_given_candidate(
    tmp_path: Path, output: str, error: str | None
) -> None:
    arguments = {
        "output": output,
        "input": "Write to {{steps.pick_1}}",
        "inputs": {"pick_1": "Ana Lima, who knows Python and Ray"},
    }
    ctx = ToolContext(task_id="hire-1", step_id="draft_1", workspace=tmp_path)
    result = asyncio.run(REGISTRY.call("names_candidate", arguments, ctx, policy=POLICY))
    assert result.ok is (error is None)
    if error:
        assert error in (result.error or "")


@pytest.mark.parametrize(
    ("output", "error"),
    [
        ("We would love to talk about the role at Acme Robotics.", None),
        ("Ana, we would love to talk.", None),
        ("Ben Okafor would love to talk to you.", "it must not name Ben Okafor"),
        ("Please say hi to Ben.", "it must not name Ben Okafor"),
    ],
)
def test_no_other_candidate_allows_no_name_but_never_another_one(
    tmp_path: Path, output: str, error: str | None
) -> None:
    arguments = {"output": output, "inputs": {"pick_1": "Ana Lima, who knows Python and Ray"}}
    ctx = ToolContext(task_id="hire-1", step_id="draft_1", workspace=tmp_path)
    result = asyncio.run(REGISTRY.call("no_other_candidate", arguments, ctx, policy=POLICY))
    assert result.ok is (error is None), result
    if error:
        assert error in (result.error or "")


def test_compose_email_addresses_and_signs_the_body(tmp_path: Path) -> None:
    ctx = ToolContext(task_id="hire-1", step_id="compose_1", workspace=tmp_path)
    text = (
        "to: Ana Lima, who knows Python and Ray\nfrom: Maria Chen\n\n"
        "Dear Ana,\nWe would love to talk."
    )
    result = asyncio.run(REGISTRY.call("compose_email", {"text": text}, ctx, policy=POLICY))
    assert result.ok, result
    assert result.output == "Dear Ana Lima,\n\nWe would love to talk.\n\nBest regards,\nMaria Chen"
    unknown = "to: Zed\nfrom: Maria Chen\n\nHello."
    result = asyncio.run(REGISTRY.call("compose_email", {"text": unknown}, ctx, policy=POLICY))
    assert not result.ok and "names no known candidate" in (result.error or "")


MESSAGES = (
    "=== to: Ana Lima, who knows Python and Ray\n"
    'Dear Ana,\nwe would love to talk about the "platform" role.\nMaria\n'
    "=== to: Ben Okafor, who knows Python and Ray\n"
    "Dear Ben, we would love to talk.\n"
)


def test_send_writes_one_message_per_candidate_once_per_idempotency_key(tmp_path: Path) -> None:
    report = json.loads(_ok("send_outreach", MESSAGES, tmp_path, step="send"))
    outbox = tmp_path / "outbox.jsonl"
    assert report == {"outbox": str(outbox), "sent": ["Ana Lima", "Ben Okafor"], "already_sent": []}
    messages = read_outbox(outbox)
    assert [(m["to"], m["email"]) for m in messages] == [
        ("Ana Lima", "ana.lima@example.com"),
        ("Ben Okafor", "ben.okafor@example.com"),
    ]
    assert (
        messages[0]["text"] == 'Dear Ana,\nwe would love to talk about the "platform" role.\nMaria'
    )
    assert messages[0]["id"] == "hire-1:send:1:Ana Lima"
    # The same attempt again (re-sent after a crash): nothing new in the outbox.
    again = json.loads(_ok("send_outreach", MESSAGES, tmp_path, step="send"))
    assert again["sent"] == [] and again["already_sent"] == ["Ana Lima", "Ben Okafor"]
    assert read_outbox(outbox) == messages
    # Another attempt is another key.
    third = json.loads(_ok("send_outreach", MESSAGES, tmp_path, step="send", attempt=2))
    assert third["sent"] == ["Ana Lima", "Ben Okafor"]
    assert len(read_outbox(outbox)) == 4


@pytest.mark.parametrize(
    ("messages", "error"),
    [
        ("Dear Ana", "messages must start with a '=== to: <candidate>' line"),
        ("=== to: Zed Null\nDear Zed", "names no known candidate"),
        ("=== to: Ana Lima\n  \n", "the message to Ana Lima is empty"),
        ("=== to: Ana Lima\nDear [Name], hi", "still holds placeholders: [Name]"),
        ("=== to: Ana Lima\nhi\n=== to: Ana Lima\nhi", "two messages are addressed to Ana Lima"),
    ],
)
def test_send_refuses_unusable_messages_and_writes_nothing(
    tmp_path: Path, messages: str, error: str
) -> None:
    result = _call("send_outreach", messages, tmp_path)
    assert not result.ok and error in (result.error or "")
    assert not (tmp_path / "outbox.jsonl").exists()


def test_responses_and_slots_follow_the_sent_messages(tmp_path: Path) -> None:
    sent = _ok("send_outreach", MESSAGES, tmp_path, step="send")
    responses = _ok("record_responses", f'{{"sent": {sent}}}', tmp_path)
    recorded = json.loads(responses)
    assert [r["name"] for r in recorded["interested"]] == ["Ana Lima", "Ben Okafor"]
    assert recorded["interested"][0]["available"][0] == ["2026-12-01T09:00", "2026-12-01T12:00"]
    assert recorded["declined"] == [] and recorded["no_reply"] == []
    kept = json.loads((tmp_path / "responses.json").read_text())
    assert kept[0]["reply"].startswith("Thank you for reaching out!")
    slots = json.loads(_ok("propose_slots", f'{{"responses": {responses}}}', tmp_path))
    # Ana: her 09-12 with Maria 10-12 and Tom 09-11:30; Ben: his 13-17 with Maria 14-16 and
    # Tom 09-15 (on the 3rd Tom is away); 45-minute slots.
    assert [(s["candidate"], s["start"], s["end"]) for s in slots["slots"]] == [
        ("Ana Lima", "2026-12-01T10:00", "2026-12-01T10:45"),
        ("Ana Lima", "2026-12-01T10:45", "2026-12-01T11:30"),
        ("Ben Okafor", "2026-12-02T14:00", "2026-12-02T14:45"),
    ]
    assert slots["interviewers"] == ["Maria Chen", "Tom Weber"]
    assert slots["unscheduled"] == []
    assert json.loads((tmp_path / "slots.json").read_text()) == slots


def test_replies_name_who_declined_and_who_is_silent(tmp_path: Path) -> None:
    sent = {"outbox": "x", "sent": ["Chloe Martin", "Zed Null"], "already_sent": ["Ana Lima"]}
    recorded = json.loads(_ok("record_responses", json.dumps({"sent": sent}), tmp_path))
    assert [r["name"] for r in recorded["interested"]] == ["Ana Lima"]
    assert recorded["declined"] == ["Chloe Martin"]
    assert recorded["no_reply"] == ["Zed Null"]


def test_slots_skip_no_one_interested_and_report_who_cannot_be_scheduled(
    tmp_path: Path,
) -> None:
    responses = {
        "interested": [
            {"name": "Farid Haddad", "available": [["2026-12-04T09:00", "2026-12-04T12:00"]]},
            {"name": "David Kim", "available": [["2026-12-01T13:00", "2026-12-01T17:00"]]},
        ],
        "declined": ["Chloe Martin"],
    }
    slots = json.loads(_ok("propose_slots", json.dumps({"responses": responses}), tmp_path))
    assert slots["slots"] == []  # Maria is not free on Friday, nobody on the 1st afternoon
    assert slots["unscheduled"] == ["Farid Haddad", "David Kim"]


def test_every_output_fits_the_embedding_model(tmp_path: Path, ranking: str) -> None:
    """Step outputs become memory episodes, embedded by MiniLM (at most 254 tokens)."""
    sent = _ok("send_outreach", MESSAGES, tmp_path, step="send")
    responses = _ok("record_responses", f'{{"sent": {sent}}}', tmp_path)
    slots = _ok("propose_slots", f'{{"responses": {responses}}}', tmp_path)
    for output in (ranking, sent, responses, slots):
        assert len(output) < 600, output
