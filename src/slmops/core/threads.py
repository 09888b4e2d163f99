"""Running blocking calls from async steps without letting them hold a run hostage."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
from collections.abc import Callable
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
