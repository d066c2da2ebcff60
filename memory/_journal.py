"""The embedded store's file: append-only JSON lines, one ``put`` record per episode.

Appending whole lines and fsyncing once per batch keeps a batch durable when ``remember``
returns; a crash mid-write can only leave a torn last line, which loading drops with a
warning instead of refusing to start.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from memory._episode import Episode

logger = logging.getLogger(__name__)


class _PutRecord(BaseModel):
    # An explicit op leaves room for later record kinds (deletes, TTL expiry) in the same file.
    model_config = ConfigDict(frozen=True, extra="forbid")

    op: Literal["put"] = "put"
    episode: Episode


class EpisodeJournal:
    """Reads and appends the JSON-lines file of one store.

    One process writes a given file (the memory actor); concurrent writers are not supported.

    Args:
        path: The ``.jsonl`` file; created with its parent directories on first write.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> list[Episode]:
        """Reads every stored episode in write order (later records win on load).

        Unreadable lines are skipped with a warning; a torn last line (crash mid-write) is
        also cut off the file so the next append starts on a clean line.
        """
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        lines = data.split(b"\n")
        tail = lines.pop()  # b"" when the file ends with a newline, as it should
        episodes = [
            episode
            for number, line in enumerate(lines, start=1)
            if (episode := self._parse(line, number)) is not None
        ]
        if tail.strip():
            episodes.extend(self._recover_tail(tail, len(lines) + 1, len(data)))
        return episodes

    def append(self, episodes: Sequence[Episode]) -> None:
        """Appends episodes as one write, then flushes and fsyncs before returning."""
        if not episodes:
            return
        payload = b"".join(
            _PutRecord(episode=episode).model_dump_json().encode() + b"\n" for episode in episodes
        )
        created = not self.path.exists()
        if created:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a+b") as file:
            # A failed earlier write may have left a partial line: never glue a record onto it.
            if file.seek(0, os.SEEK_END) > 0:
                file.seek(-1, os.SEEK_END)
                if file.read(1) != b"\n":
                    payload = b"\n" + payload
            file.write(payload)
            file.flush()
            os.fsync(file.fileno())
        if created:
            _fsync_directory(self.path.parent)

    def _parse(self, line: bytes, number: int) -> Episode | None:
        if not line.strip():
            return None
        try:
            return _PutRecord.model_validate_json(line).episode
        except ValidationError as exc:
            logger.warning(
                "%s:%d: skipping unreadable memory record (%d errors: %s)",
                self.path,
                number,
                exc.error_count(),
                exc.errors()[0]["msg"],
            )
            return None

    def _recover_tail(self, tail: bytes, number: int, size: int) -> list[Episode]:
        episode = self._parse(tail, number)
        if episode is not None:
            # Complete record, only its newline was lost; append() adds the newline later.
            return [episode]
        with self.path.open("r+b") as file:
            file.truncate(size - len(tail))
            os.fsync(file.fileno())
        logger.warning("%s: cut %d bytes of a torn last record", self.path, len(tail))
        return []


def _fsync_directory(directory: Path) -> None:
    # Makes the new file's directory entry durable, not just its contents.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
