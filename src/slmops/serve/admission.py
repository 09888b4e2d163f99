"""Admission: a bounded number of generations at a time, with a bounded waiting line.

Local GGUF models decode up to their engine's slots together (see models/llamacpp.py), so a
server admits that many at once and queues the rest. Waiting is bounded: when the line is
full, a request is refused at once (HTTP 429 with Retry-After) instead of piling up behind a
queue it will time out in.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class QueueFullError(Exception):
    def __init__(self, waiting: int, retry_after_s: int) -> None:
        super().__init__(f"{waiting} requests are already waiting")
        self.retry_after_s = retry_after_s


class Admission:
    def __init__(self, max_waiting: int, *, concurrency: int = 1) -> None:
        if max_waiting < 0 or concurrency < 1:
            raise ValueError("max_waiting must be >= 0 and concurrency >= 1")
        self.max_waiting = max_waiting
        self._slots = asyncio.Semaphore(concurrency)
        self.waiting = 0
        self.active = 0
        self.recent_seconds = 1.0  # a moving estimate of one request's service time

    def retry_after(self) -> int:
        return max(1, round(self.recent_seconds * (self.waiting + 1)))

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold a generation slot; raises QueueFullError when the waiting line is full."""
        if self._slots.locked() and self.waiting >= self.max_waiting:
            raise QueueFullError(self.waiting, self.retry_after())
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        self.active += 1
        started = asyncio.get_running_loop().time()
        try:
            yield
        finally:
            self.active -= 1
            elapsed = asyncio.get_running_loop().time() - started
            self.recent_seconds = 0.8 * self.recent_seconds + 0.2 * elapsed
            self._slots.release()
