"""Actor bodies for the lane tests (importable by the Ray workers)."""

from __future__ import annotations

import asyncio
import os
import threading

from protocols import LaneAddress, LaneServer


class Unpicklable(Exception):
    """An exception whose pickle cannot be read back (its constructor needs two arguments)."""

    def __init__(self, a: str, b: str):
        super().__init__(a)
        self.b = b


class AsyncTarget:
    """Serves ``echo``, ``fail``, ``odd_failure`` and ``wait`` on a lane from its event loop."""

    def __init__(self) -> None:
        self.lane = LaneServer(
            self, ("echo", "fail", "odd_failure", "wait", "pid", "local_function")
        )
        self.cancelled = 0

    async def lane_address(self) -> LaneAddress | None:
        return await self.lane.address()

    async def echo(self, value: object) -> object:
        return value

    async def fail(self, message: str) -> None:
        raise ValueError(message)

    async def odd_failure(self) -> None:
        raise Unpicklable("first", "second")

    async def wait(self, seconds: float) -> str:
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return "waited"

    def pid(self) -> int:
        return os.getpid()

    def local_function(self, x: int) -> object:
        def add(y: int) -> int:  # a closure: the standard pickler refuses it
            return x + y

        return add

    def not_served(self) -> str:
        return "ran"

    def counts(self) -> tuple[int, int]:
        return self.lane.served, self.cancelled


class ThreadedTarget:
    """A sync actor whose lane serves from a thread of its own."""

    def __init__(self) -> None:
        self.lane = LaneServer(self, ("where",))

    def lane_address(self) -> LaneAddress | None:
        return self.lane.address_in_thread()

    def where(self) -> str:
        return threading.current_thread().name

    def served(self) -> int:
        return self.lane.served
