"""Short-term memory: what goes into one prompt, fitted to a token budget.

Tokens are counted approximately, without the model's tokenizer, and on the high side: every
digit and every punctuation mark is a token, the rest (letters, spaces) four characters a token;
plus ``MESSAGE_OVERHEAD`` per chat message (role markers and separators). English prose is
about four characters a token, but the llama.cpp vocabularies we serve split numbers into
digits and give JSON's quotes, braces and colons tokens of their own, so JSON (tool specs,
earlier steps' outputs) is nearer three characters a token and JSON full of numbers (scores,
dates) below two and a half. Counting four characters a token throughout undercounted such
prompts by ~40% and overflowed a small model's context; over-counting only leaves some of the
budget unused. ``tests/agents/test_agents_executor.py`` checks the estimate against the bundled
model's tokenizer.

When the parts do not fit, the longest flexible part is clipped first (the earliest of equally
long ones), each down to ``MIN_PART_CHARS`` with a note saying how much was cut; then flexible
parts are left out, oldest first, with one note; only then are required parts clipped. This
is deterministic and needs no model call.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from agents._model import ChatMessage

CHARS_PER_TOKEN = 4
"""Characters a token of letters and spaces (digits and punctuation count one each)."""
MESSAGE_OVERHEAD = 4
MIN_PART_CHARS = 80


# The ASCII characters that count a quarter token (str.isalpha or str.isspace), for the fast path.
_ASCII_QUARTER = bytes(c for c in range(128) if chr(c).isalpha() or chr(c).isspace())


def count_tokens(text: str) -> int:
    """Approximate tokens of ``text``, rather too many than too few: one per digit or
    punctuation mark, plus ``ceil(other characters / 4)``."""
    if text.isascii():  # the usual case, counted in C: ~40x faster than the loop below
        single = len(text.encode("ascii").translate(None, _ASCII_QUARTER))
    else:
        single = sum(1 for c in text if not (c.isalpha() or c.isspace()))
    return single + -(-(len(text) - single) // CHARS_PER_TOKEN)


def message_tokens(messages: Iterable[ChatMessage]) -> int:
    """Approximate tokens of chat messages, with their per-message overhead and tool calls."""
    total = 0
    for message in messages:
        total += MESSAGE_OVERHEAD + count_tokens(message["content"])
        for call in message.get("tool_calls", ()):
            total += count_tokens(json.dumps(call["function"]))
    return total


def spec_tokens(specs: Sequence[dict[str, Any]]) -> int:
    """Approximate tokens of tool specs (servers describe them in the prompt)."""
    return count_tokens(json.dumps(list(specs))) if specs else 0


@dataclass(frozen=True)
class Part:
    """One piece of a prompt.

    Args:
        text: The text (one or more lines).
        required: Kept whole unless nothing flexible is left to shorten (the goal, the step).
    """

    text: str
    required: bool = False


def clip_note(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, ending with a note of what was cut."""
    if len(text) <= limit:
        return text
    note = f" …[{len(text)} chars, clipped]"
    if limit <= len(note):
        return text[:limit]
    return text[: limit - len(note)] + note


def clip_tokens(text: str, budget_tokens: int) -> str:
    """``text`` cut (with ``clip_note``) to at most ``budget_tokens`` approximate tokens."""
    limit = len(text)
    clipped = text
    while count_tokens(clipped) > max(budget_tokens, 0) and limit > 0:
        over = count_tokens(clipped) - max(budget_tokens, 0)
        limit = max(0, min(limit - 1, len(clipped) - over))
        clipped = clip_note(text, limit)
    return clipped


def fit(parts: Sequence[Part], budget_tokens: int) -> str:
    """Joins ``parts`` with newlines into at most ``budget_tokens`` (approximate) tokens.

    Args:
        parts: In prompt order, oldest flexible parts first.
        budget_tokens: The most tokens the joined text may take.
    """
    limit = max(budget_tokens, 0)
    texts = [p.text for p in parts]
    flexible = [i for i, p in enumerate(parts) if not p.required]

    def size() -> int:
        return count_tokens("\n".join(t for t in texts if t))

    # 1. Clip the longest flexible part (the earliest of equal ones) by about what is over.
    while size() > limit:
        candidates = [i for i in flexible if len(texts[i]) > MIN_PART_CHARS]
        if not candidates:
            break
        i = max(candidates, key=lambda j: (len(texts[j]), -j))
        over = (size() - limit) * CHARS_PER_TOKEN
        texts[i] = clip_note(parts[i].text, max(MIN_PART_CHARS, len(texts[i]) - over))
    # 2. Leave flexible parts out, oldest first, with one note.
    dropped = 0
    for i in flexible:
        if size() <= limit:
            break
        if texts[i]:
            texts[i] = ""
            dropped += 1
    joined = "\n".join(t for t in texts if t)
    if dropped:
        note = f"[{dropped} earlier part(s) left out to fit the context]"
        joined = f"{note}\n{joined}" if joined else note
    # 3. Still over: the required parts themselves are cut.
    return clip_tokens(joined, limit)


def fit_messages(messages: list[ChatMessage], budget_tokens: int) -> list[ChatMessage]:
    """Shortens ``tool`` messages, oldest and longest first, until the messages fit the budget.

    System and user messages are left alone (the caller fitted them when it wrote them); a
    tool message keeps at least ``MIN_PART_CHARS`` characters and a note of the cut.
    """
    out = [m.copy() for m in messages]
    tools = [i for i, m in enumerate(out) if m["role"] == "tool"]
    while message_tokens(out) > budget_tokens:
        candidates = [i for i in tools if len(out[i]["content"]) > MIN_PART_CHARS]
        if not candidates:
            break
        i = max(candidates, key=lambda j: (len(out[j]["content"]), -j))
        over = (message_tokens(out) - budget_tokens) * CHARS_PER_TOKEN
        # Clip the original again (not the clipped text), so the note gives its real length.
        limit = max(MIN_PART_CHARS, len(out[i]["content"]) - over)
        out[i]["content"] = clip_note(messages[i]["content"], limit)
    return out
