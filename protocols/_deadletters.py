"""Dead letters: messages the bus gave up on, kept with their error to inspect and replay."""

from __future__ import annotations

import json
import logging
import os
from collections import OrderedDict
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from protocols.errors import BackPressureError, ErrorReport, TroupeError
from protocols.messages import Envelope

logger = logging.getLogger(__name__)

DEAD_LETTER_TOPIC_PREFIX = "dead."


class DeadLetter(BaseModel):
    """A message that failed every attempt, with the last error."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    envelope: Envelope = Field(description="The message as last delivered.")
    group: str = Field(description="The consumer group that could not handle it.")
    error: ErrorReport = Field(description="Why the last attempt failed.")
    attempts: int = Field(ge=1)
    dead_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @property
    def topic(self) -> str:
        """The dead-letter topic it sits on: ``dead.<original topic>``."""
        return DEAD_LETTER_TOPIC_PREFIX + self.envelope.topic


class DeadLetterSink(Protocol):
    """Where dead letters go, async so a Ray actor can host it."""

    async def put(self, letter: DeadLetter) -> None:
        """Keeps a dead letter."""
        ...

    async def list(self, topic: str | None = None) -> list[DeadLetter]:
        """Dead letters, oldest first, of one original topic or all."""
        ...

    async def take(self, message_id: str) -> DeadLetter:
        """Removes and returns one dead letter (to replay it)."""
        ...


class DeadLetterStore:
    """Dead letters in memory, optionally persisted as JSON lines (put and take records).

    Bounded: past ``capacity`` letters ``put`` raises ``BackPressureError`` rather than dropping
    anything; inspect, replay or purge to make room.
    """

    def __init__(self, path: Path | None = None, *, capacity: int = 100_000):
        self._path = path
        self._capacity = capacity
        self._letters: OrderedDict[str, DeadLetter] = OrderedDict()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._load(path)

    def put(self, letter: DeadLetter) -> None:
        """Keeps a letter (a repeat of the same message id replaces the earlier one)."""
        key = letter.envelope.message_id
        if key not in self._letters and len(self._letters) >= self._capacity:
            raise BackPressureError(
                f"the dead-letter store is full ({self._capacity}); replay or purge letters"
            )
        self._append({"op": "put", "letter": json.loads(letter.model_dump_json())})
        self._letters[key] = letter

    def list(self, topic: str | None = None) -> list[DeadLetter]:
        """Letters of one original topic (or all), oldest first."""
        return [d for d in self._letters.values() if topic in (None, d.envelope.topic)]

    def take(self, message_id: str) -> DeadLetter:
        """Removes and returns a letter."""
        if message_id not in self._letters:
            raise TroupeError(f"no dead letter with message id {message_id}", code="not_found")
        self._append({"op": "take", "message_id": message_id})
        return self._letters.pop(message_id)

    def _append(self, record: dict[str, object]) -> None:
        if self._path is None:
            return
        with self._path.open("a", encoding="utf-8") as file:
            file.write(json.dumps(record) + "\n")
            file.flush()
            os.fsync(file.fileno())

    def _load(self, path: Path) -> None:
        if not path.exists():
            return
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            try:
                record = json.loads(line)
                if record["op"] == "put":
                    letter = DeadLetter.model_validate(record["letter"])
                    self._letters[letter.envelope.message_id] = letter
                else:
                    self._letters.pop(record["message_id"], None)
            except (ValueError, KeyError, ValidationError):
                # A torn last line after a crash: what came before it is intact.
                logger.warning("%s:%d: skipping an unreadable dead-letter record", path, number)


class InMemoryDeadLetters:
    """A ``DeadLetterSink`` in this process."""

    def __init__(self, store: DeadLetterStore | None = None):
        self.store = store or DeadLetterStore()

    async def put(self, letter: DeadLetter) -> None:
        """See ``DeadLetterStore.put``."""
        self.store.put(letter)

    async def list(self, topic: str | None = None) -> list[DeadLetter]:
        """See ``DeadLetterStore.list``."""
        return self.store.list(topic)

    async def take(self, message_id: str) -> DeadLetter:
        """See ``DeadLetterStore.take``."""
        return self.store.take(message_id)
