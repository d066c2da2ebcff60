"""The embedded store's file: append-only JSON lines, ``put`` (an episode and its vector)
and ``delete`` records.

Vectors are stored with their episode (base64 of little-endian float32), so a restart does
not embed anything again.

Appending whole lines and fsyncing once per batch keeps a batch durable when ``remember``
returns; a crash mid-write can only leave a torn last line, which loading drops with a
warning instead of refusing to start.
"""

from __future__ import annotations

import base64
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from memory._episode import Episode

logger = logging.getLogger(__name__)


class PutRecord(BaseModel):
    """An episode stored (or replaced), with its unit vector if it has one."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    op: Literal["put"] = "put"
    episode: Episode = Field(description="The stored episode.")
    vector: str | None = Field(default=None, description="Base64 of little-endian float32.")

    @classmethod
    def of(cls, episode: Episode, vector: np.ndarray | None) -> PutRecord:
        """Builds a record, encoding the vector."""
        encoded = None
        if vector is not None:
            encoded = base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()
        return cls(episode=episode, vector=encoded)

    def decoded_vector(self) -> np.ndarray | None:
        """The vector as a float32 array, or ``None``."""
        if self.vector is None:
            return None
        return np.frombuffer(base64.b64decode(self.vector), dtype="<f4").astype(np.float32)


class DeleteRecord(BaseModel):
    """Episodes forgotten from one namespace."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    op: Literal["delete"] = "delete"
    namespace: str = Field(description="Namespace the ids belong to.")
    ids: tuple[str, ...] = Field(description="Forgotten episode ids.")


Record = Annotated[PutRecord | DeleteRecord, Field(discriminator="op")]
_RECORD: TypeAdapter[PutRecord | DeleteRecord] = TypeAdapter(Record)


class EpisodeJournal:
    """Reads and appends the JSON-lines file of one store.

    One process writes a given file (the memory actor); concurrent writers are not supported.

    Args:
        path: The ``.jsonl`` file; created with its parent directories on first write.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> list[PutRecord | DeleteRecord]:
        """Reads every record in write order (replay them in order).

        Unreadable lines are skipped with a warning; a torn last line (crash mid-write) is
        also cut off the file so the next append starts on a clean line.
        """
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        lines = data.split(b"\n")
        tail = lines.pop()  # b"" when the file ends with a newline, as it should
        records = [
            record
            for number, line in enumerate(lines, start=1)
            if (record := self._parse(line, number)) is not None
        ]
        if tail.strip():
            records.extend(self._recover_tail(tail, len(lines) + 1, len(data)))
        return records

    def append(self, records: Sequence[PutRecord | DeleteRecord]) -> None:
        """Appends records as one write, then flushes and fsyncs before returning."""
        if not records:
            return
        payload = b"".join(record.model_dump_json().encode() + b"\n" for record in records)
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

    def _parse(self, line: bytes, number: int) -> PutRecord | DeleteRecord | None:
        if not line.strip():
            return None
        try:
            return _RECORD.validate_json(line)
        except ValidationError as exc:
            logger.warning(
                "%s:%d: skipping unreadable memory record (%d errors: %s)",
                self.path,
                number,
                exc.error_count(),
                exc.errors()[0]["msg"],
            )
            return None

    def _recover_tail(self, tail: bytes, number: int, size: int) -> list[PutRecord | DeleteRecord]:
        record = self._parse(tail, number)
        if record is not None:
            # Complete record, only its newline was lost; append() adds the newline later.
            return [record]
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
