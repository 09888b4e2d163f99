"""Function: a plain Python callable (sync or async) as a typed, validated step."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Any, ClassVar

from slmops.core.step import Step
from slmops.core.threads import run_blocking
from slmops.errors import StepDefinitionError

_MISSING = inspect.Parameter.empty


def _declared_types(fn: Callable[..., Any], *, need: bool) -> tuple[Any, Any]:
    """Input type (the one required parameter's annotation) and output type (the return's)."""
    target = fn if inspect.isroutine(fn) else getattr(fn, "__call__", fn)  # noqa: B004
    try:
        params = [
            p
            for p in inspect.signature(fn).parameters.values()
            if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
    except (TypeError, ValueError):  # some builtins have no signature
        params = []
    else:
        if len(params) != 1:
            raise StepDefinitionError(
                f"function {getattr(fn, '__name__', fn)!r} must take exactly one required "
                f"argument (its input), not {len(params)}"
            )
    if not need:
        return _MISSING, _MISSING
    try:
        hints = typing.get_type_hints(target)
    except NameError as exc:
        raise StepDefinitionError(
            f"the annotations of {getattr(fn, '__name__', fn)!r} cannot be resolved ({exc}); "
            "define their types at module level or pass input_type=/output_type="
        ) from None
    except TypeError:  # builtins and other objects without annotations
        hints = {}
    first = hints.get(params[0].name, _MISSING) if params else _MISSING
    return first, hints.get("return", _MISSING)


class Function(Step[Any, Any]):
    """Wrap ``fn(value) -> result`` as a step. Types come from ``fn``'s annotations unless
    given; sync functions run inline, or in a worker thread when ``offload=True`` or a
    timeout is set (a blocking call can only be timed out from outside its thread)."""

    kind: ClassVar[str] = "function"

    def __init__(
        self,
        fn: Callable[[Any], Any],
        *,
        name: str | None = None,
        input_type: Any = None,
        output_type: Any = None,
        offload: bool = False,
        **options: Any,
    ) -> None:
        if not callable(fn):
            raise StepDefinitionError(f"Function needs a callable, got {type(fn).__name__}")
        explicit = input_type is not None and output_type is not None
        declared_in, declared_out = _declared_types(fn, need=not explicit)
        input_type = input_type if input_type is not None else declared_in
        output_type = output_type if output_type is not None else declared_out
        label = name or getattr(fn, "__name__", None) or type(fn).__name__
        for side, tp in (("input", input_type), ("output", output_type)):
            if tp is _MISSING:
                raise StepDefinitionError(
                    f"the {side} type of {label!r} is unknown: annotate the function or pass "
                    f"{side}_type=...",
                    path=label,
                )
        self.fn = fn
        self.is_async = inspect.iscoroutinefunction(fn)
        self.offload = offload
        super().__init__(label, input_type=input_type, output_type=output_type, **options)

    async def _execute(self, value: Any) -> Any:
        if self.is_async:
            return await self.fn(value)
        if self.offload or self.timeout_s is not None:
            return await run_blocking(self.fn, value)
        return self.fn(value)


def function(
    fn: Callable[[Any], Any] | None = None, **options: Any
) -> Function | Callable[[Callable[[Any], Any]], Function]:
    """Decorator form: ``@function`` or ``@function(retry=3, cache=True)``."""
    if fn is not None:
        return Function(fn, **options)
    return lambda wrapped: Function(wrapped, **options)
