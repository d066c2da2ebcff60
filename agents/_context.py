"""Short-term memory: what goes into one prompt, fitted to a token budget.

Tokens are counted approximately, without the model's tokenizer: ``ceil(chars / 4)`` per text
plus ``MESSAGE_OVERHEAD`` per chat message (role markers and separators). Four characters a
token is about right for English with the llama.cpp vocabularies we serve; the budget should
leave some slack for text that tokenizes worse (numbers, code, other languages).

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
MESSAGE_OVERHEAD = 4
MIN_PART_CHARS = 80


def count_tokens(text: str) -> int:
    """Approximate tokens of ``text`` (``ceil(chars / 4)``)."""
    return -(-len(text) // CHARS_PER_TOKEN)


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


def fit(parts: Sequence[Part], budget_tokens: int) -> str:
    """Joins ``parts`` with newlines into at most ``budget_tokens`` (approximate) tokens.

    Args:
        parts: In prompt order, oldest flexible parts first.
        budget_tokens: The most tokens the joined text may take.
    """
    limit = max(budget_tokens, 0) * CHARS_PER_TOKEN
    texts = [p.text for p in parts]
    flexible = [i for i, p in enumerate(parts) if not p.required]

    def size() -> int:
        return len("\n".join(t for t in texts if t))

    # 1. Clip the longest flexible part (the earliest of equal ones) by what is over.
    while size() > limit:
        candidates = [i for i in flexible if len(texts[i]) > MIN_PART_CHARS]
        if not candidates:
            break
        i = max(candidates, key=lambda j: (len(texts[j]), -j))
        texts[i] = clip_note(texts[i], max(MIN_PART_CHARS, len(texts[i]) - (size() - limit)))
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
    return clip_note(joined, limit)


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
        content = out[i]["content"]
        out[i]["content"] = clip_note(content, max(MIN_PART_CHARS, len(content) - over))
    return out
