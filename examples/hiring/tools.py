"""The hiring pipeline's tools: typed, deterministic, and (for sending) idempotent.

List ``examples.hiring.tools:hiring_tools`` in ``agents.tools.custom``. Each step's input is its
tool's arguments as JSON; an earlier step's JSON output goes in as a value
(``{"job": {{steps.parse_job}}}``), so the coordinator's text substitution keeps it valid JSON.
The model writes only the outreach messages; everything else here is code.
"""

from __future__ import annotations

import fcntl
import json
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from agents._reviewer import CheckArgs, find_placeholders
from agents._toolkit import ToolArgs, ToolContext, ToolResult, TypedTool
from memory import LocalEmbedder

DATA_DIR = Path(__file__).resolve().parent / "data"
OUTBOX_FILE = "outbox.jsonl"
RECIPIENT_MARK = "=== to:"
"""Starts each message in the send step's input: ``=== to: <candidate>`` then the text."""

# Canonical skill -> patterns that mean it (word-bounded; "Go" only capitalised).
SKILLS: dict[str, tuple[str, ...]] = {
    "Python": (r"(?i)\bpython\b",),
    "Ray": (r"\bRay\b",),
    "Kubernetes": (r"(?i)\bkubernetes\b", r"(?i)\bk8s\b"),
    "PyTorch": (r"(?i)\bpytorch\b",),
    "Terraform": (r"(?i)\bterraform\b",),
    "Prometheus": (r"(?i)\bprometheus\b",),
    "Grafana": (r"(?i)\bgrafana\b",),
    "Docker": (r"(?i)\bdocker\b",),
    "Go": (r"\bGo\b", r"(?i)\bgolang\b"),
    "AWS": (r"\bAWS\b",),
    "PostgreSQL": (r"(?i)\bpostgres(?:ql)?\b",),
    "Django": (r"(?i)\bdjango\b",),
    "Spark": (r"\bSpark\b",),
    "pandas": (r"(?i)\bpandas\b",),
    "Java": (r"\bJava\b",),
    "React": (r"\bReact\b",),
    "TypeScript": (r"(?i)\btypescript\b",),
}


def skills_in(text: str) -> list[str]:
    """Canonical skills the text mentions, in ``SKILLS`` order."""
    return [
        skill for skill, patterns in SKILLS.items() if any(re.search(p, text) for p in patterns)
    ]


class _Data(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# -- committed data ------------------------------------------------------------------------------


class Candidate(_Data):
    """A candidate as their CV file says."""

    name: str
    email: str
    file: str
    text: str


def read_candidates(cv_dir: Path) -> list[Candidate]:
    """Every ``*.md`` CV in the directory: ``# Name`` heading, ``Email:`` line, the text."""
    candidates = []
    for path in sorted(cv_dir.glob("*.md")):
        text = path.read_text()
        name = re.search(r"^#\s+(.+)$", text, re.MULTILINE)
        email = re.search(r"^Email:\s*(\S+)", text, re.MULTILINE)
        if name is None or email is None:
            raise ValueError(f"CV {path.name} needs a '# Name' heading and an 'Email:' line")
        candidates.append(
            Candidate(name=name.group(1).strip(), email=email.group(1), file=path.name, text=text)
        )
    return candidates


def _inside(root: Path, name: str) -> Path:
    """``root / name``, refusing anything that leaves ``root``."""
    path = (root / name).resolve()
    if not path.is_relative_to(root.resolve()):
        raise ValueError(f"{name!r} is outside the data directory")
    return path


def _span(item: dict[str, str]) -> tuple[datetime, datetime]:
    return datetime.fromisoformat(item["start"]), datetime.fromisoformat(item["end"])


def _compact(model: BaseModel) -> str:
    return model.model_dump_json(exclude_defaults=False)


# -- 1. parse the job description ------------------------------------------------------------


class JobPosting(_Data):
    """A job description's parts."""

    title: str = Field(description="The heading.")
    company: str = Field(default="", description="The 'Company:' line.")
    must_have: list[str] = Field(default_factory=list, description="'Must have' bullets.")
    nice_to_have: list[str] = Field(default_factory=list, description="'Nice to have' bullets.")


class ParseJobArgs(ToolArgs):
    """Arguments of ``parse_job``."""

    file: str = Field(min_length=1, max_length=200, description="Job description file name.")


class ParseJobTool(TypedTool[ParseJobArgs]):
    """Splits a Markdown job description into title, company and requirement bullets."""

    name = "parse_job"
    description = "Parse a job description file into title, company and requirement bullets."
    args_model = ParseJobArgs
    uses_workspace = False

    def __init__(self, data_dir: Path = DATA_DIR) -> None:
        self._data = data_dir

    async def run(self, args: ParseJobArgs, ctx: ToolContext) -> ToolResult:
        """The posting as JSON."""
        try:
            text = _inside(self._data, args.file).read_text()
        except (OSError, ValueError) as exc:
            return self.fail(f"cannot read job description {args.file!r}: {exc}")
        title = re.search(r"^#\s+(.+)$", text, re.MULTILINE)
        if title is None:
            return self.fail(f"{args.file} has no '# Title' heading")
        company = re.search(r"^Company:\s*(.+)$", text, re.MULTILINE)
        posting = JobPosting(
            title=title.group(1).strip(),
            company=company.group(1).strip() if company else "",
            must_have=_bullets(text, "must have"),
            nice_to_have=_bullets(text, "nice to have"),
        )
        if not posting.must_have:
            return self.fail(f"{args.file} has no '## Must have' list")
        return self.result(_compact(posting))


def _bullets(text: str, section: str) -> list[str]:
    """The ``- item`` lines under the ``## <section>`` heading."""
    items: list[str] = []
    inside = False
    for line in text.splitlines():
        if line.startswith("#"):
            inside = line.lstrip("#").strip().lower() == section
            continue
        if inside and line.strip().startswith("- "):
            items.append(line.strip()[2:].strip())
    return items


# -- 2. extract the skills -------------------------------------------------------------------


class SkillProfile(_Data):
    """The skills a job asks for, by canonical name."""

    title: str
    company: str = ""
    must_have: list[str]
    nice_to_have: list[str] = Field(default_factory=list)


class ExtractSkillsArgs(ToolArgs):
    """Arguments of ``extract_skills``."""

    job: JobPosting = Field(description="The parsed job posting (parse_job's output).")


class ExtractSkillsTool(TypedTool[ExtractSkillsArgs]):
    """Maps requirement bullets to canonical skills with a fixed vocabulary (no model)."""

    name = "extract_skills"
    description = "Extract the required and nice-to-have skills from a parsed job posting."
    args_model = ExtractSkillsArgs
    uses_workspace = False

    async def run(self, args: ExtractSkillsArgs, ctx: ToolContext) -> ToolResult:
        """The skill profile as JSON."""
        must = skills_in("\n".join(args.job.must_have))
        nice = [s for s in skills_in("\n".join(args.job.nice_to_have)) if s not in must]
        if not must:
            return self.fail("no known skill in the must-have list; extend SKILLS")
        profile = SkillProfile(
            title=args.job.title, company=args.job.company, must_have=must, nice_to_have=nice
        )
        return self.result(_compact(profile))


# -- 3. score the CVs ------------------------------------------------------------------------


class Scored(_Data):
    """One candidate's score, as kept in the workspace (``ranking.json``)."""

    rank: int
    name: str
    score: float = Field(description="Similarity plus skill coverage, 0-2.")
    similarity: float = Field(description="Cosine similarity of CV and job profile.")
    matched: list[str] = Field(description="Skills of the job the CV has, must-haves first.")
    missing: list[str] = Field(description="Must-have skills the CV lacks.")
    shortlisted: bool


class Shortlisted(_Data):
    """A shortlisted candidate and the job's skills they have."""

    name: str
    matched: list[str]


class Ranking(_Data):
    """The step's output, kept short (it is embedded into memory and later steps' inputs):
    names best first, their scores, and the shortlist. The full table is ``ranking.json``."""

    ranked: list[str]
    scores: list[float]
    shortlist: list[Shortlisted]


class ScoreArgs(ToolArgs):
    """Arguments of ``score_candidates``."""

    skills: SkillProfile = Field(description="The job's skills (extract_skills's output).")
    top: int = Field(default=2, ge=1, le=10, description="How many to shortlist.")
    cv_dir: str = Field(default="cvs", max_length=200, description="CV directory (data dir).")


class ScoreCandidatesTool(TypedTool[ScoreArgs]):
    """Ranks CVs by embedding similarity to the job plus must-have rules.

    A candidate lacking a must-have skill is never shortlisted, whatever the similarity.
    """

    name = "score_candidates"
    description = "Score and rank candidate CVs against the job's skills; shortlist the top."
    args_model = ScoreArgs
    timeout_s = 120.0  # the first call loads the embedding model

    def __init__(self, data_dir: Path = DATA_DIR, embedder: LocalEmbedder | None = None) -> None:
        self._data = data_dir
        self._embedder = embedder or LocalEmbedder()

    async def run(self, args: ScoreArgs, ctx: ToolContext) -> ToolResult:
        """The ranking as JSON; every score in ``ranking.json`` in the workspace."""
        try:
            candidates = read_candidates(_inside(self._data, args.cv_dir))
        except (OSError, ValueError) as exc:
            return self.fail(f"cannot read CVs from {args.cv_dir!r}: {exc}")
        if not candidates:
            return self.fail(f"no CV (*.md) in {args.cv_dir!r}")
        table = await self._score(candidates, args.skills, top=args.top)
        ctx.workspace.mkdir(parents=True, exist_ok=True)
        (ctx.workspace / "ranking.json").write_text(
            json.dumps([row.model_dump() for row in table], indent=1)
        )
        ranking = Ranking(
            ranked=[row.name for row in table],
            scores=[round(row.score, 2) for row in table],
            shortlist=[Shortlisted(name=r.name, matched=r.matched) for r in table if r.shortlisted],
        )
        return self.result(_compact(ranking))

    async def _score(
        self, candidates: list[Candidate], profile: SkillProfile, *, top: int
    ) -> list[Scored]:
        query = (
            f"{profile.title}. Must have: {', '.join(profile.must_have)}. "
            f"Nice to have: {', '.join(profile.nice_to_have)}."
        )
        vectors = await self._embedder.embed([query, *(c.text for c in candidates)])
        similarity = vectors[1:] @ vectors[0]
        rows = []
        for candidate, sim in zip(candidates, similarity, strict=True):
            has = set(skills_in(candidate.text))
            matched = [s for s in (*profile.must_have, *profile.nice_to_have) if s in has]
            missing = [s for s in profile.must_have if s not in has]
            coverage = len([s for s in profile.must_have if s in has]) / len(profile.must_have)
            extras = len([s for s in profile.nice_to_have if s in has])
            score = float(np.clip(sim, 0, 1)) + coverage + min(0.125 * extras, 0.25)
            rows.append((not missing, score, candidate.name, float(sim), matched, missing))
        rows.sort(key=lambda r: (r[0], r[1]), reverse=True)
        return [
            Scored(
                rank=i + 1,
                name=name,
                score=round(score, 3),
                similarity=round(sim, 3),
                matched=matched,
                missing=missing,
                shortlisted=qualified and i < top,
            )
            for i, (qualified, score, name, sim, matched, missing) in enumerate(rows)
        ]


# -- 4. one shortlisted candidate, in words --------------------------------------------------


class PickArgs(ToolArgs):
    """Arguments of ``pick_candidate``."""

    ranking: Ranking = Field(description="score_candidates's output.")
    rank: int = Field(ge=1, le=10, description="Which shortlisted candidate (1 = best).")


class PickCandidateTool(TypedTool[PickArgs]):
    """Names the n-th shortlisted candidate and two matched skills, as the drafting step reads."""

    name = "pick_candidate"
    description = "Name the n-th shortlisted candidate and two of their matched skills."
    args_model = PickArgs
    uses_workspace = False

    async def run(self, args: PickArgs, ctx: ToolContext) -> ToolResult:
        """``<Name>, who knows <skill> and <skill>``."""
        shortlist = args.ranking.shortlist
        if args.rank > len(shortlist):
            return self.fail(f"only {len(shortlist)} candidate(s) are shortlisted")
        chosen = shortlist[args.rank - 1]
        skills = " and ".join(chosen.matched[:2]) or "the skills we need"
        return self.result(f"{chosen.name}, who knows {skills}")


# -- the drafting step's check ---------------------------------------------------------------


class NamesCandidateTool(TypedTool[CheckArgs]):
    """Predicate for a ``tool`` check: the message names the candidate its step was given, and
    no other candidate."""

    name = "names_candidate"
    description = "Check that a message names the right candidate (and no other)."
    args_model = CheckArgs
    uses_workspace = False

    def __init__(self, data_dir: Path = DATA_DIR) -> None:
        self._data = data_dir

    require_name = True
    """False: the message may name nobody (``no_other_candidate``)."""

    async def run(self, args: CheckArgs, ctx: ToolContext) -> ToolResult:
        """ok when the candidate's first or full name is in the output (unless not required)
        and no other candidate's is."""
        names = [c.name for c in read_candidates(self._data / "cvs")]
        given = "\n".join([args.input, *args.inputs.values()])
        wanted = next((n for n in names if n in given), None)
        if wanted is None:
            return self.fail("the step's input names no known candidate")
        text = args.output
        if self.require_name and not _names_person(text, wanted):
            return self.fail(f"the message must be addressed to {wanted}; write their name")
        other = next((n for n in names if n != wanted and _names_person(text, n)), None)
        if other is not None:
            return self.fail(f"the message is for {wanted}; it must not name {other}")
        return self.result(f"for {wanted}")


class NoOtherCandidateTool(NamesCandidateTool):
    """Predicate for a ``tool`` check: a message body names no candidate but its own (it may
    name nobody: the greeting is added by ``compose_email``)."""

    name = "no_other_candidate"
    description = "Check that a message body names no other candidate."
    require_name = False


class ComposeArgs(ToolArgs):
    """Arguments of ``compose_email``."""

    text: str = Field(
        min_length=1,
        max_length=4000,
        description="'to: <candidate line>', 'from: <sender>', a blank line, then the body.",
    )


class ComposeEmailTool(TypedTool[ComposeArgs]):
    """Puts a drafted body into an e-mail: greeting with the candidate's name, the body, and
    the signature. The model writes what the message says; addressing it is not its job."""

    name = "compose_email"
    description = "Compose an e-mail from 'to:' and 'from:' lines and a drafted body."
    args_model = ComposeArgs
    uses_workspace = False

    def __init__(self, data_dir: Path = DATA_DIR) -> None:
        self._data = data_dir

    async def run(self, args: ComposeArgs, ctx: ToolContext) -> ToolResult:
        """The e-mail text."""
        head, _, body = args.text.strip().partition("\n\n")
        fields = dict(
            (key.strip().lower(), value.strip())
            for key, _, value in (line.partition(":") for line in head.splitlines())
        )
        names = [c.name for c in read_candidates(self._data / "cvs")]
        to = next((n for n in names if n in fields.get("to", "")), None)
        if to is None:
            return self.fail("the 'to:' line names no known candidate")
        sender = fields.get("from", "")
        lines = [line for line in body.strip().splitlines() if line.strip()]
        if lines and re.match(r"^(dear|hi|hello)\b", lines[0], re.IGNORECASE):
            lines = lines[1:]  # the greeting is ours
        if not lines:
            return self.fail("the body is empty once its greeting is removed")
        text = "\n".join(lines)
        signature = f"\n\nBest regards,\n{sender}" if sender else ""
        return self.result(f"Dear {to},\n\n{text}{signature}")


def _names(text: str, name: str) -> bool:
    """Whether ``name`` is in ``text`` as whole words ("Ana" is not in "Dana")."""
    return re.search(rf"\b{re.escape(name)}\b", text, re.IGNORECASE) is not None


def _names_person(text: str, full_name: str) -> bool:
    """Whether the text names the person by full or first name."""
    return _names(text, full_name) or _names(text, full_name.split()[0])


# -- 5. send (high impact, once per idempotency key) -----------------------------------------


class SendReport(_Data):
    """What ``send_outreach`` did."""

    outbox: str = Field(description="The outbox file.")
    sent: list[str] = Field(description="Candidates written to the outbox by this call.")
    already_sent: list[str] = Field(
        default_factory=list, description="Skipped: sent before under the same key."
    )


class SendArgs(ToolArgs):
    """Arguments of ``send_outreach``."""

    messages: str = Field(
        min_length=1,
        max_length=8000,
        description=f"Messages, each starting with a line '{RECIPIENT_MARK} <candidate>'.",
    )


class SendOutreachTool(TypedTool[SendArgs]):
    """Writes outreach messages to the outbox: one JSON line per message.

    High impact: the coordinator asks a person first. A message is written once per
    idempotency key and candidate, so an attempt re-sent after a crash sends nothing twice.

    Args:
        outbox: The outbox file; default ``outbox.jsonl`` in the task's workspace.
        data_dir: Where the CVs (names, e-mail addresses) are.
    """

    name = "send_outreach"
    description = "Send outreach messages to candidates (writes them to the outbox)."
    args_model = SendArgs
    impact = "high"

    def __init__(self, outbox: Path | None = None, data_dir: Path = DATA_DIR) -> None:
        self._outbox = outbox
        self._data = data_dir

    async def run(self, args: SendArgs, ctx: ToolContext) -> ToolResult:
        """The send report as JSON; nothing is written when any message is unusable."""
        candidates = {c.name: c for c in read_candidates(self._data / "cvs")}
        messages = parse_messages(args.messages, list(candidates))
        if isinstance(messages, str):
            return self.fail(messages)
        outbox = self._outbox or ctx.workspace / OUTBOX_FILE
        outbox.parent.mkdir(parents=True, exist_ok=True)
        sent, skipped = [], []
        with outbox.open("a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)  # two executors must not interleave a check
            handle.seek(0)
            done = {json.loads(line)["id"] for line in handle if line.strip()}
            for name, text in messages:
                message_id = f"{ctx.idempotency_key}:{name}"
                if message_id in done:
                    skipped.append(name)
                    continue
                entry = {
                    "id": message_id,
                    "task_id": ctx.task_id,
                    "to": name,
                    "email": candidates[name].email,
                    "text": text,
                }
                handle.write(json.dumps(entry) + "\n")
                sent.append(name)
            handle.flush()
        report = SendReport(outbox=str(outbox), sent=sent, already_sent=skipped)
        return self.result(_compact(report))


def parse_messages(text: str, names: list[str]) -> list[tuple[str, str]] | str:
    """``(candidate, text)`` per ``=== to:`` section; a string saying what is wrong otherwise."""
    sections = re.split(rf"^{re.escape(RECIPIENT_MARK)}", text.strip(), flags=re.MULTILINE)
    if sections[0].strip():
        return f"messages must start with a '{RECIPIENT_MARK} <candidate>' line"
    messages: list[tuple[str, str]] = []
    for section in sections[1:]:
        header, _, body = section.partition("\n")
        name = next((n for n in names if n in header), None)
        if name is None:
            return f"'{RECIPIENT_MARK}{header}' names no known candidate"
        body = body.strip()
        if not body:
            return f"the message to {name} is empty"
        placeholders = find_placeholders(body)
        if placeholders:
            return f"the message to {name} still holds placeholders: {', '.join(placeholders)}"
        if any(n == name for n, _ in messages):
            return f"two messages are addressed to {name}"
        messages.append((name, body))
    if not messages:
        return f"no message: each must start with a '{RECIPIENT_MARK} <candidate>' line"
    return messages


def read_outbox(path: Path) -> list[dict[str, Any]]:
    """The outbox's messages, in the order they were written."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# -- 6. record the responses -----------------------------------------------------------------


class Response(_Data):
    """One candidate's reply, as kept in the workspace (``responses.json``)."""

    name: str
    interested: bool
    reply: str
    available: list[dict[str, str]] = Field(default_factory=list)


class Interested(_Data):
    """A candidate who wants to talk, and when they can: ``[start, end]`` pairs."""

    name: str
    available: list[tuple[str, str]]


class Responses(_Data):
    """The step's output, kept short: who is interested and when, who declined, who is silent.
    The replies themselves are in ``responses.json``."""

    interested: list[Interested]
    declined: list[str] = Field(default_factory=list)
    no_reply: list[str] = Field(default_factory=list)


class RecordResponsesArgs(ToolArgs):
    """Arguments of ``record_responses``."""

    sent: SendReport = Field(description="send_outreach's output.")
    file: str = Field(default="responses.json", max_length=200, description="Replies file.")


class RecordResponsesTool(TypedTool[RecordResponsesArgs]):
    """Reads the (simulated) replies of the candidates who were written to, and records them
    in the task's workspace (``responses.json``)."""

    name = "record_responses"
    description = "Collect and record the candidates' replies to the outreach messages."
    args_model = RecordResponsesArgs

    def __init__(self, data_dir: Path = DATA_DIR) -> None:
        self._data = data_dir

    async def run(self, args: RecordResponsesArgs, ctx: ToolContext) -> ToolResult:
        """Who is interested and when, as JSON."""
        try:
            replies = json.loads(_inside(self._data, args.file).read_text())
        except (OSError, ValueError) as exc:
            return self.fail(f"cannot read replies {args.file!r}: {exc}")
        contacted = [*args.sent.sent, *args.sent.already_sent]
        found = [Response(name=n, **replies[n]) for n in contacted if n in replies]
        ctx.workspace.mkdir(parents=True, exist_ok=True)
        (ctx.workspace / "responses.json").write_text(
            json.dumps([r.model_dump() for r in found], indent=1)
        )
        summary = Responses(
            interested=[
                Interested(name=r.name, available=[(w["start"], w["end"]) for w in r.available])
                for r in found
                if r.interested
            ],
            declined=[r.name for r in found if not r.interested],
            no_reply=[n for n in contacted if n not in replies],
        )
        return self.result(_compact(summary))


# -- 7. propose interview slots --------------------------------------------------------------


class Slot(_Data):
    """One proposed interview (every interviewer of the panel attends)."""

    candidate: str
    start: str
    end: str


class SlotsArgs(ToolArgs):
    """Arguments of ``propose_slots``."""

    responses: Responses = Field(description="record_responses's output.")
    per_candidate: int = Field(default=2, ge=1, le=5, description="Slots offered to each.")
    file: str = Field(default="availability.json", max_length=200, description="Availability.")


class ProposeSlotsTool(TypedTool[SlotsArgs]):
    """Intersects each interested candidate's availability with every interviewer's, and
    proposes slots that no two candidates share."""

    name = "propose_slots"
    description = "Propose interview slots where the candidate and all interviewers are free."
    args_model = SlotsArgs

    def __init__(self, data_dir: Path = DATA_DIR) -> None:
        self._data = data_dir

    async def run(self, args: SlotsArgs, ctx: ToolContext) -> ToolResult:
        """``{"interviewers": [...], "slots": [...], "unscheduled": [...]}`` as JSON."""
        try:
            data = json.loads(_inside(self._data, args.file).read_text())
        except (OSError, ValueError) as exc:
            return self.fail(f"cannot read availability {args.file!r}: {exc}")
        length = timedelta(minutes=int(data.get("slot_minutes", 45)))
        panel: dict[str, list[dict[str, str]]] = data["interviewers"]
        common = _intersect_all([[_span(w) for w in windows] for windows in panel.values()])
        taken: list[tuple[datetime, datetime]] = []
        slots: list[Slot] = []
        unscheduled: list[str] = []
        for candidate in args.responses.interested:
            windows = [
                (datetime.fromisoformat(a), datetime.fromisoformat(b))
                for a, b in candidate.available
            ]
            mine = _slots(_intersect(common, windows), length, taken, args.per_candidate)
            if not mine:
                unscheduled.append(candidate.name)
            for start, end in mine:
                taken.append((start, end))
                slots.append(
                    Slot(
                        candidate=candidate.name,
                        start=start.isoformat(timespec="minutes"),
                        end=end.isoformat(timespec="minutes"),
                    )
                )
        payload = {
            "interviewers": sorted(panel),
            "slots": [s.model_dump() for s in slots],
            "unscheduled": unscheduled,
        }
        ctx.workspace.mkdir(parents=True, exist_ok=True)
        (ctx.workspace / "slots.json").write_text(json.dumps(payload, indent=1))
        return self.result(json.dumps(payload, separators=(",", ":")))


Span = tuple[datetime, datetime]


def _intersect(a: list[Span], b: list[Span]) -> list[Span]:
    out = []
    for a_start, a_end in a:
        for b_start, b_end in b:
            start, end = max(a_start, b_start), min(a_end, b_end)
            if start < end:
                out.append((start, end))
    return sorted(out)


def _intersect_all(windows: list[list[Span]]) -> list[Span]:
    if not windows:
        return []
    common = sorted(windows[0])
    for more in windows[1:]:
        common = _intersect(common, more)
    return common


def _slots(free: list[Span], length: timedelta, taken: list[Span], most: int) -> list[Span]:
    found: list[Span] = []
    for start, end in free:
        cursor = start
        while cursor + length <= end and len(found) < most:
            slot = (cursor, cursor + length)
            if not any(s < slot[1] and slot[0] < e for s, e in taken):
                found.append(slot)
            cursor += length
    return found


# -- the factory -----------------------------------------------------------------------------


def hiring_tools() -> list[TypedTool[Any]]:
    """Every hiring tool, on the committed sample data (for ``agents.tools.custom``)."""
    return [
        ParseJobTool(),
        ExtractSkillsTool(),
        ScoreCandidatesTool(),
        PickCandidateTool(),
        NamesCandidateTool(),
        NoOtherCandidateTool(),
        ComposeEmailTool(),
        SendOutreachTool(),
        RecordResponsesTool(),
        ProposeSlotsTool(),
    ]


TOOL_NAMES: tuple[str, ...] = (
    ParseJobTool.name,
    ExtractSkillsTool.name,
    ScoreCandidatesTool.name,
    PickCandidateTool.name,
    NamesCandidateTool.name,
    NoOtherCandidateTool.name,
    ComposeEmailTool.name,
    SendOutreachTool.name,
    RecordResponsesTool.name,
    ProposeSlotsTool.name,
)
