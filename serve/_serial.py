"""Engines whose model serves one request at a time: the lock, thread and stream plumbing.

A llama.cpp ``Llama`` and a transformers model hold one KV cache each, so a replica runs one
request at a time (more replicas for more). Blocking generation runs in a worker thread so the
replica's event loop stays free; streamed tokens cross back to the loop through a queue.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from abc import abstractmethod
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import assert_never

from serve._engine import Engine
from serve._types import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChunkChoice,
    ChunkDelta,
    CompletionUsage,
    FinishReason,
)


@dataclass(frozen=True)
class Completion:
    """What one generation produced."""

    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int

    def usage(self) -> CompletionUsage:
        """Token counts in the API's shape."""
        return CompletionUsage(
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            total_tokens=self.prompt_tokens + self.completion_tokens,
        )


class _Started:
    """Stream event: the request passed validation; text follows."""


_STARTED = _Started()
_StreamEvent = _Started | str | Completion | BaseException


class SerialEngine(Engine):
    """An engine that generates one request at a time, in a worker thread.

    Subclasses implement ``_generate_locked``; ``_complete`` and ``_stream_tokens`` give them a
    whole reply or a token stream with the locking done once, here.
    """

    def __init__(self) -> None:
        self._async_lock = asyncio.Lock()  # queues requests without blocking the event loop
        self._thread_lock = threading.Lock()  # guards the model against close() and strays

    @abstractmethod
    def _generate_locked(
        self,
        request: ChatCompletionRequest,
        *,
        on_start: Callable[[], None] | None,
        on_text: Callable[[str], None] | None,
        cancelled: threading.Event | None,
    ) -> Completion:
        """Validates and generates one request; called in the worker thread, lock held.

        Calls ``on_start`` once validation passed and ``on_text`` with each piece of text;
        stops at the next token once ``cancelled`` is set.
        """

    def _run(
        self,
        request: ChatCompletionRequest,
        *,
        on_start: Callable[[], None] | None = None,
        on_text: Callable[[str], None] | None = None,
        cancelled: threading.Event | None = None,
    ) -> Completion:
        with self._thread_lock:
            return self._generate_locked(
                request, on_start=on_start, on_text=on_text, cancelled=cancelled
            )

    async def _complete(self, request: ChatCompletionRequest) -> Completion:
        """One whole generation, after the requests queued before it."""
        async with self._async_lock:
            return await asyncio.to_thread(self._run, request)

    async def _stream_tokens(
        self, request: ChatCompletionRequest
    ) -> AsyncIterator[ChatCompletionChunk]:
        """One generation as OpenAI stream chunks; closing the stream stops generating."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[_StreamEvent] = asyncio.Queue()
        cancelled = threading.Event()

        def emit(event: _StreamEvent) -> None:
            try:
                loop.call_soon_threadsafe(events.put_nowait, event)
            except RuntimeError:  # the loop is closed: nobody listens any more
                cancelled.set()

        def work() -> None:
            try:
                completion = self._run(
                    request, on_start=lambda: emit(_STARTED), on_text=emit, cancelled=cancelled
                )
            except Exception as error:  # delivered to the consumer, which raises it there
                emit(error)
            else:
                emit(completion)

        async with self._async_lock:
            worker = asyncio.ensure_future(asyncio.to_thread(work))
            try:
                async for chunk in _chunks(events, model=self.model_id):
                    yield chunk
            finally:
                cancelled.set()
                # Wait for the thread to let go of the model; a further cancel may not stop that.
                await asyncio.shield(worker)


async def _chunks(
    events: asyncio.Queue[_StreamEvent], *, model: str
) -> AsyncIterator[ChatCompletionChunk]:
    """Turns the worker thread's events into OpenAI stream chunks."""
    completion_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

    def chunk(
        choices: list[ChunkChoice], usage: CompletionUsage | None = None
    ) -> ChatCompletionChunk:
        return ChatCompletionChunk(
            id=completion_id, created=created, model=model, choices=choices, usage=usage
        )

    while True:
        event = await events.get()
        match event:
            case BaseException():
                raise event
            case _Started():
                yield chunk([ChunkChoice(delta=ChunkDelta(role="assistant", content=""))])
            case str():
                yield chunk([ChunkChoice(delta=ChunkDelta(content=event))])
            case Completion():
                yield chunk([ChunkChoice(delta=ChunkDelta(), finish_reason=event.finish_reason)])
                yield chunk([], usage=event.usage())
                return
            case _:
                assert_never(event)
