"""Jinja2 templates from untrusted authors (prompts, a GGUF's chat template), bounded in time
and size as well as sandboxed.

Jinja2's sandbox stops a template from reaching Python's internals, but not from hanging
the process (``{% for a in range(100000) %}{% for b in range(100000) %}``) or exhausting
its memory (``{{ 'a' * 10**9 }}``, ``{{ 10**10**10 }}``). :class:`BoundedSandbox` refuses,
*before* computing it, any operation that would build a string or list longer than
:data:`MAX_OUTPUT_CHARS` or an integer wider than :data:`MAX_INT_BITS`, and checks a
deadline (:data:`MAX_RENDER_SECONDS`) on every call, filter, operator and
loop step; :func:`render_bounded` also caps the rendered text. Each refusal raises
:class:`TemplateLimitError` naming the limit. Lives in models/, the lowest layer both
prompt rendering (core/) and chat templates (models/) can import.
"""

from __future__ import annotations

import contextvars
import functools
import re
import string
import time
import types
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, cast

from jinja2 import Template, nodes, pass_environment
from jinja2.filters import make_attrgetter
from jinja2.runtime import markup_join, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError
from jinja2.utils import _PassArg, generate_lorem_ipsum
from jinja2.visitor import NodeTransformer

MAX_OUTPUT_CHARS = 1_000_000
"""The longest text a template may render, and the longest string or list it may build on
the way (a prompt of a million characters is already ~250k tokens, beyond any context)."""
MAX_RENDER_SECONDS = 5.0
"""How long one render may take (a typical prompt renders in well under a millisecond)."""
MAX_INT_BITS = 10_000
"""The widest integer a template may compute (about 3,000 digits; Python refuses to print
one of more than 4,300 anyway)."""

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "slmops_template_deadline", default=None
)
_CHECK_EVERY = 256  # loop steps between deadline checks (a check costs ~50 ns)


class TemplateLimitError(SecurityError):
    """A template exceeded a rendering limit (time, output size, value size)."""


def _check_deadline() -> None:
    deadline = _deadline.get()
    if deadline is not None and time.monotonic() > deadline:
        raise TemplateLimitError(
            f"template rendering took longer than {MAX_RENDER_SECONDS:g} s "
            "(the limit on one render)"
        )


def _check_size(size: int, what: str = "a string or list of") -> None:
    if size > MAX_OUTPUT_CHARS:
        raise TemplateLimitError(
            f"template would build {what} {size:,} characters or items; "
            f"the limit is {MAX_OUTPUT_CHARS:,}"
        )


def _check_width(width: int) -> None:
    if width > MAX_OUTPUT_CHARS:
        raise TemplateLimitError(
            f"template asks for a width or count of {width:,}; the limit is {MAX_OUTPUT_CHARS:,}"
        )


def _weight(value: Any, budget: int | None = None) -> int:
    """About how many characters ``value`` prints as; stops counting past ``budget``."""
    if isinstance(value, str | bytes):
        return len(value)
    if isinstance(value, list | tuple | dict | set | frozenset):
        limit = MAX_OUTPUT_CHARS if budget is None else budget
        total = 2 + 2 * len(value)  # brackets and separators
        items: Iterable[Any] = value.items() if isinstance(value, dict) else value
        for item in items:
            if total > limit:
                break
            total += _weight(item, limit - total)
        return total
    return 8  # a number or another object: its text does not grow with the template


def _sequence_len(value: Any) -> int:
    return len(value) if isinstance(value, str | bytes) else _weight(value)


_SEQUENCES = (str, bytes, list, tuple)


def _check_multiply(left: Any, right: Any) -> None:
    for seq, count in ((left, right), (right, left)):
        if isinstance(seq, _SEQUENCES) and isinstance(count, int):
            if count > 0 and seq:
                per_copy = _weight(seq, MAX_OUTPUT_CHARS // count + 1)
                _check_size(per_copy * count)
            return
    if isinstance(left, int) and isinstance(right, int):
        _check_bits(abs(left).bit_length() + abs(right).bit_length())


def _check_bits(bits: int) -> None:
    if bits > MAX_INT_BITS:
        raise TemplateLimitError(
            f"template would compute an integer of about {bits:,} bits; "
            f"the limit is {MAX_INT_BITS:,}"
        )


def _check_power(base: Any, exponent: Any) -> None:
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1:
        # |base| ** exponent has at least (bit_length - 1) * exponent bits
        _check_bits(max(abs(base).bit_length() - 1, 1) * exponent)


_PERCENT_SPEC = re.compile(
    r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?[diouxXeEfFgGcrsa%]"
)


def _numbers(values: Iterable[Any]) -> int:
    return sum(abs(v) for v in values if isinstance(v, int))


def _percent_size(fmt: str, args: Any) -> int:
    """An upper bound on the length of ``fmt % args`` (widths, precisions and values)."""
    values: list[Any] = (
        list(args)
        if isinstance(args, tuple)
        else list(args.values())
        if isinstance(args, Mapping)
        else [args]
    )
    specs = _PERCENT_SPEC.findall(fmt)
    widths = sum(int(p) for spec in specs for p in spec if p.isdigit())
    if any("*" in spec for spec in specs):
        widths += _numbers(values)
    biggest = max((_weight(v) for v in values), default=0)
    return len(fmt) + len(specs) * biggest + widths


def _format_size(fmt: str, args: Iterable[Any]) -> int:
    """An upper bound on the length of ``fmt.format(*args)``."""
    values = list(args)
    try:
        fields = [spec for _, name, spec, _ in string.Formatter().parse(fmt) if name is not None]
    except ValueError:  # malformed: format raises it
        return len(fmt)
    widths = sum(int(n) for spec in fields for n in re.findall(r"\d+", spec or ""))
    if any("{" in (spec or "") for spec in fields):
        widths += _numbers(values)
    biggest = max((_weight(v) for v in values), default=0)
    return len(fmt) + len(fields) * biggest + widths


def _check_string_method(method: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Refuse a call of a str/bytes method that would build an oversized string."""
    wrapped = getattr(method, "__wrapped__", method)  # the sandbox's str.format wrapper
    owner = getattr(wrapped, "__self__", None)
    if not isinstance(owner, str | bytes) or not isinstance(wrapped, types.BuiltinMethodType):
        return
    name = wrapped.__name__
    kwargs = {k: v for k, v in kwargs.items() if k not in ("_loop_vars", "_block_vars")}
    first = args[0] if args else None
    if name in ("ljust", "rjust", "center", "zfill") and isinstance(first, int):
        _check_width(first)
    elif name == "expandtabs":
        tabsize = first if isinstance(first, int) else kwargs.get("tabsize", 8)
        tabs = owner.count("\t" if isinstance(owner, str) else b"\t")  # type: ignore[arg-type]
        _check_size(len(owner) + tabs * max(int(tabsize), 0))
    elif name == "replace" and len(args) >= 2:
        old, new = args[0], args[1]
        if isinstance(old, str | bytes) and isinstance(new, str | bytes):
            hits = owner.count(old) if old else len(owner) + 1  # type: ignore[arg-type]
            _check_size(len(owner) + hits * len(new))
    elif name == "join" and args:
        _check_size(_join_size(owner, args[0]))
    elif name in ("format", "format_map") and isinstance(owner, str):
        values = [*args, *kwargs.values()]
        if name == "format_map" and args and isinstance(args[0], Mapping):
            values = list(args[0].values())
        _check_size(_format_size(owner, values))
    elif name == "translate" and isinstance(first, Mapping):
        longest = max((_weight(v) for v in first.values()), default=1)
        _check_size(len(owner) * max(longest, 1))


def _join_size(separator: Any, items: Any) -> int:
    if not isinstance(items, list | tuple | range | str):
        return 0  # an iterator: cannot be measured without consuming it (checked after)
    total = 0
    for item in items:
        total += _weight(item, MAX_OUTPUT_CHARS - total) + len(separator)
        if total > MAX_OUTPUT_CHARS:
            break
    return total


# --- filters ----------------------------------------------------------------------------

# Filters that print their value: it must not be over the limit before they do.
_PRINTING_FILTERS = frozenset(
    {
        "capitalize",
        "center",
        "e",
        "escape",
        "forceescape",
        "format",
        "indent",
        "lower",
        "pprint",
        "replace",
        "safe",
        "string",
        "striptags",
        "title",
        "tojson",
        "trim",
        "truncate",
        "upper",
        "urlencode",
        "urlize",
        "wordcount",
        "wordwrap",
        "xmlattr",
    }
)
# Filters whose whole-number arguments are widths or counts of what they build.
_WIDTH_FILTERS = frozenset({"batch", "center", "indent", "slice", "tojson", "truncate", "wordwrap"})


def _check_filter(name: str, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    if name in _PRINTING_FILTERS:
        _check_size(_weight(value))
    if name in _WIDTH_FILTERS:
        for arg in (*args, *kwargs.values()):
            if isinstance(arg, int) and not isinstance(arg, bool):
                _check_width(abs(arg))
    text = value if isinstance(value, str) else ""
    if name == "indent":
        width = args[0] if args else kwargs.get("width", 4)
        per_line = len(width) if isinstance(width, str) else int(width)
        _check_size(len(text) + (text.count("\n") + 1) * per_line)
    elif name == "wordwrap":
        width = args[0] if args else kwargs.get("width", 79)
        wrap = args[3] if len(args) > 3 else kwargs.get("wrapstring") or "\n"
        lines = 2 * len(text) // max(int(width), 1) + text.count("\n") + 2
        _check_size(len(text) + lines * len(str(wrap)))
    elif name == "replace" and len(args) >= 2:
        _check_string_method(str(value).replace, args[:2], {})
    elif name == "join":
        separator = args[0] if args else kwargs.get("d", "")
        _check_size(_join_size(str(separator), value))
    elif name == "format" and isinstance(value, str):
        _check_size(_percent_size(value, kwargs if kwargs else tuple(args)))


def _bounded_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    skip = 1 if _PassArg.from_obj(function) is not None else 0  # context/environment first

    @functools.wraps(function)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        _check_deadline()
        if len(args) > skip:
            _check_filter(name, args[skip], args[skip + 1 :], kwargs)
        result = function(*args, **kwargs)
        if isinstance(result, str | bytes | list):
            _check_size(len(result))
        return result

    return bounded


@pass_environment
def _bounded_sum(
    environment: Any, iterable: Iterable[Any], attribute: str | int | None = None, start: Any = 0
) -> Any:
    """Jinja's ``sum`` one addition at a time, each checked like ``+``: the built-in ``sum``
    runs in C, where ``(range(100000)|batch(1)|list)|sum(start=[])`` copies a growing list
    100,000 times (quadratic) without ever reaching a deadline check."""
    if isinstance(start, str | bytes | bytearray):  # as the built-in refuses it
        raise TypeError("sum() can't sum strings [use ''.join(seq) instead]")
    if attribute is not None:
        iterable = map(make_attrgetter(environment, attribute), iterable)
    total = start
    for item in iterable:
        _check_deadline()
        if isinstance(total, _SEQUENCES) and isinstance(item, _SEQUENCES):
            _check_size(_sequence_len(total) + _sequence_len(item))
        total = total + item
    return total


def _finalize(value: Any) -> Any:
    """Every ``{{ value }}`` before it is printed: a list of a thousand references to one
    long string is small in memory but not as text."""
    if type(value) is not str and isinstance(value, list | tuple | dict | set | frozenset):
        _check_size(_weight(value), "text of about")
    return value


def _lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
    _check_size(n * max * 8, "placeholder text of about")  # ~8 characters a word
    return generate_lorem_ipsum(n=n, html=html, min=min, max=max)


# --- the environment --------------------------------------------------------------------


class _Bounding(NodeTransformer):
    """Rewrites a parsed template so loops and ``~`` go through the environment's checks."""

    def visit_For(self, node: nodes.For) -> nodes.Node:  # noqa: N802 (Jinja's visitor API)
        self.generic_visit(node)
        iterable = cast(nodes.Expr, node.iter)
        node.iter = _environment_call("bounded_iter", [iterable], iterable.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:  # noqa: N802
        self.generic_visit(node)
        return _environment_call("bounded_concat", list(node.nodes), node.lineno)


def _environment_call(method: str, args: list[nodes.Expr], lineno: int) -> nodes.Call:
    target = nodes.EnvironmentAttribute(method, lineno=lineno)
    return nodes.Call(target, args, [], None, None, lineno=lineno)


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox, bounded in time and in the size of what a template builds
    (see the module's docstring). Render with :func:`render_bounded`."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("finalize", _finalize)
        super().__init__(*args, **kwargs)
        self.filters = {name: _bounded_filter(name, f) for name, f in self.filters.items()}
        self.filters["sum"] = _bounded_filter("sum", _bounded_sum)
        self.globals["lipsum"] = _lipsum

    def add_filter(self, name: str, function: Callable[..., Any]) -> None:
        self.filters[name] = _bounded_filter(name, function)

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        return _Bounding().visit(tree)  # type: ignore[no-any-return]

    # --- what the compiled template calls --------------------------------------------

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _check_deadline()
        if operator == "*":
            _check_multiply(left, right)
        elif operator == "**":
            _check_power(left, right)
        elif operator == "+":
            if isinstance(left, _SEQUENCES) and isinstance(right, _SEQUENCES):
                _check_size(_sequence_len(left) + _sequence_len(right))
        elif operator == "%" and isinstance(left, str):
            _check_size(_percent_size(left, right))
        return self.binop_table[operator](left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        _check_deadline()
        _check_string_method(__obj, args, kwargs)
        result = super().call(__context, __obj, *args, **kwargs)
        if isinstance(result, str | bytes | list):
            _check_size(len(result))
        return result

    def bounded_iter(self, iterable: Any) -> Iterator[Any]:
        """A ``for`` loop's iterable, checking the deadline as the loop runs."""
        for count, item in enumerate(iterable):
            if not count % _CHECK_EVERY:
                _check_deadline()
            yield item

    def bounded_concat(self, *values: Any) -> str:
        """``a ~ b``: refused before joining when the result would be too long."""
        _check_size(sum(_weight(v) for v in values))
        join = markup_join if self.autoescape else str_join
        return join(values)

    def concat(self, parts: list[str]) -> str:  # type: ignore[override]
        """Joins a block's output (``{% set %}...{% endset %}``, a macro, a filter block)."""
        _check_deadline()
        _check_size(sum(map(len, parts)), "a block of text of")
        return "".join(parts)


def render_bounded(template: Template, context: Mapping[str, Any]) -> str:
    """``template.render(context)``, refused with :class:`TemplateLimitError` once it has
    run :data:`MAX_RENDER_SECONDS` or produced :data:`MAX_OUTPUT_CHARS` characters."""
    outer = _deadline.get()
    deadline = time.monotonic() + MAX_RENDER_SECONDS
    token = _deadline.set(deadline if outer is None else min(outer, deadline))
    limit = MAX_OUTPUT_CHARS
    parts: list[str] = []
    append = parts.append
    total = 0
    try:
        for part in template.root_render_func(template.new_context(dict(context))):
            total += len(part)
            if total > limit:
                raise TemplateLimitError(
                    f"template output is longer than {limit:,} characters "
                    "(the limit on a rendered template)"
                )
            append(part)
        _check_deadline()
    except Exception:
        template.environment.handle_exception()  # re-raises, with the template's lines
    finally:
        _deadline.reset(token)
    return "".join(parts)
