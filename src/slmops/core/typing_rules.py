"""How step types are validated and when one step's output may feed another's input.

Rules, strict on purpose (no silent coercion):
- a step that accepts ``Any``/``object`` accepts everything;
- the same type, or a subclass, fits;
- a pydantic model fits another when it has every required field of the other with the very
  same annotation (values are then copied field by field, never converted);
- nothing else fits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, TypeAdapter

_adapters: dict[Any, TypeAdapter[Any]] = {}


def adapter(tp: Any) -> TypeAdapter[Any]:
    """A cached TypeAdapter for ``tp`` (building one costs far more than using it)."""
    try:
        found = _adapters.get(tp)
    except TypeError:  # unhashable annotation
        return TypeAdapter(tp)
    if found is None:
        found = _adapters[tp] = TypeAdapter(tp)
    return found


def type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


Converter = Callable[[Any], Any]


def connection(out_tp: Any, in_tp: Any) -> tuple[str | None, Converter | None]:
    """``(problem, converter)``: problem is None when ``out_tp`` may feed ``in_tp``; the
    converter (or None) turns an output value into the next step's input."""
    if in_tp in (Any, object) or out_tp == in_tp:
        return None, None
    if isinstance(out_tp, type) and isinstance(in_tp, type) and issubclass(out_tp, in_tp):
        return None, None
    if _is_model(out_tp) and _is_model(in_tp):
        produced = out_tp.model_fields
        for field_name, field in in_tp.model_fields.items():
            if field_name not in produced:
                if field.is_required():
                    return (
                        f"{type_name(in_tp)} needs field '{field_name}', "
                        f"which {type_name(out_tp)} does not have",
                        None,
                    )
                continue
            if produced[field_name].annotation != field.annotation:
                return (
                    f"field '{field_name}' is {type_name(produced[field_name].annotation)} in "
                    f"{type_name(out_tp)} but {type_name(field.annotation)} in {type_name(in_tp)}",
                    None,
                )
        shared = set(in_tp.model_fields) & set(produced)

        def convert(value: BaseModel) -> BaseModel:
            return in_tp.model_validate({name: getattr(value, name) for name in shared})

        return None, convert
    return f"{type_name(out_tp)} does not fit {type_name(in_tp)}", None
