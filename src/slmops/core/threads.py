"""Running blocking calls from async steps without letting them hold a run hostage."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


async def run_blocking(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``fn`` in a daemon thread and await its result.

    Unlike ``asyncio.to_thread`` the thread is not owned by the loop's executor, so when a
    timeout abandons the call, ``asyncio.run`` (and so ``step.run``) returns at once instead
    of waiting at shutdown for the thread to finish. The call's context (trace, runtime)
    travels with it.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()
    context = contextvars.copy_context()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.done():  # abandoned by a timeout or cancellation
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def target() -> None:
        try:
            result, error = context.run(fn, *args, **kwargs), None
        except BaseException as exc:  # handed to the awaiting coroutine
            result, error = None, exc
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=target, name="slmops-blocking", daemon=True).start()
    return await future


async def iterate_blocking(iterator: Iterator[T]) -> AsyncIterator[T]:
    """Consume a blocking iterator (a model's token stream) from async code: a daemon thread
    pulls items and hands them over; when the consumer stops early, the thread stops pulling
    and closes the iterator, which ends the generation behind it."""
    loop = asyncio.get_running_loop()
    handoff: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    stop = threading.Event()

    def post(kind: str, value: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is waiting
            loop.call_soon_threadsafe(handoff.put_nowait, (kind, value))

    def produce() -> None:
        try:
            for item in iterator:
                if stop.is_set():
                    break
                post("item", item)
        except BaseException as exc:  # handed to the consumer
            post("error", exc)
        else:
            post("done", None)
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    threading.Thread(target=produce, name="slmops-stream", daemon=True).start()
    try:
        while True:
            kind, value = await handoff.get()
            if kind == "item":
                yield value
            elif kind == "error":
                raise value
            else:
                return
    finally:
        stop.set()
