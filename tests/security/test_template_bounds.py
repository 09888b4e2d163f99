"""Templates are bounded in time and size as well as sandboxed: a prompt or a GGUF's chat
template that would hang the process or exhaust its memory is refused with an error naming
the limit, within a couple of seconds (OWASP LLM Top 10: unbounded consumption)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from slmops.core.llm_call import LLMCall
from slmops.errors import ModelError, StepInputError
from slmops.models import templating
from slmops.models.base import ChatMessage
from slmops.models.llamacpp import ChatTemplate
from tests.fakes import ScriptedChatModel

LONG = "{% set s = 'a' * 999999 %}"  # the longest string a template may build

# (payload, what the error says)
HOSTILE = [
    ("{{ 'a' * 10**9 }}", "1,000,000,000 characters"),
    ("{{ 10**(10**10) }}", "bits; the limit is 10,000"),
    ("{{ (10**3000) * (10**3000) * (10**3000) * (10**3000) }}", "bits; the limit is 10,000"),
    ("{{ ('ab' * 1000) * 1000000 }}", "the limit is 1,000,000"),
    ("{{ [0] * 10**9 }}", "the limit is 1,000,000"),
    ("{{ 'a'|center(10**9) }}", "width or count of 1,000,000,000"),
    ("{{ ('x\n' * 1000)|indent(10**7) }}", "width or count"),
    ("{{ ('x ' * 1000)|wordwrap(2, wrapstring='y' * 100000) }}", "the limit is 1,000,000"),
    ("{{ '%*s'|format(10**9, '') }}", "the limit is 1,000,000"),
    ("{{ '%1000000000s' % '' }}", "the limit is 1,000,000"),
    ("{{ '%.1000000000f' % 1.5 }}", "the limit is 1,000,000"),
    ("{{ '{:>1000000000}'.format('') }}", "the limit is 1,000,000"),
    ("{{ '{:>{}}'.format('', 10**9) }}", "the limit is 1,000,000"),
    ("{{ 'a'.ljust(10**9) }}", "width or count"),
    ("{{ 'a'.zfill(10**9) }}", "width or count"),
    ("{{ ('\t' * 1000).expandtabs(10**6) }}", "the limit is 1,000,000"),
    ("{{ ('a' * 1000).replace('a', 'b' * 100000) }}", "the limit is 1,000,000"),
    ("{{ ('a' * 1000)|replace('a', 'b' * 100000) }}", "the limit is 1,000,000"),
    ("{{ lipsum(100000, max=100000) }}", "placeholder text"),
    ("{{ [1]|batch(10**9, 'x')|list }}", "width or count"),
    (LONG + "{% for i in range(40) %}{% set s = s ~ s %}{% endfor %}{{ s|length }}", "limit"),
    (LONG + "{% for i in range(40) %}{% set s = s + s %}{% endfor %}{{ s|length }}", "limit"),
    (LONG + "{{ ([s] * 1000)|join }}", "the limit is 1,000,000"),
    (LONG + "{{ ' '.join([s] * 1000) }}", "the limit is 1,000,000"),
    (LONG + "{{ [s, s, s, s, s, s, s, s, s, s] }}", "the limit is 1,000,000"),
    (LONG + "{{ [s, s]|string }}", "the limit is 1,000,000"),
    (LONG + "{{ [s, s]|tojson }}", "the limit is 1,000,000"),
    (LONG + "{{ '{0}{0}{0}'.format(s) }}", "the limit is 1,000,000"),
    (LONG + "{% set t %}{% for i in range(1000) %}{{ s }}{% endfor %}{% endset %}", "block"),
    (LONG + "{% macro m() %}{{ s }}{{ s }}{% endmacro %}{{ m() }}", "block"),
    ("{% for i in range(100000) %}{{ 'abcdefghij' * 100 }}{% endfor %}", "output is longer"),
    ("{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}", "took"),
    (
        "{% set x = range(100000)|list %}{% for a in x %}{% for b in x %}{% endfor %}{% endfor %}",
        "took",
    ),
    ("{{ (range(100000)|batch(1)|list)|sum(start=[])|length }}", "took"),  # quadratic in C
    ("{{ ([[0] * 1000] * 2000)|sum(start=[])|length }}", "the limit is 1,000,000"),
    (
        "{% macro f() %}{% for i in range(1000) %}{% endfor %}{% endmacro %}"
        "{% for a in range(100000) %}{% for b in range(100) %}{{ f() }}{% endfor %}{% endfor %}",
        "took",
    ),
]


@pytest.fixture(autouse=True)
def short_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    """One second instead of five, so the loops are refused quickly."""
    monkeypatch.setattr(templating, "MAX_RENDER_SECONDS", 1.0)


def finishes(action: Callable[[], Any], seconds: float = 10.0) -> Any:
    """``action()``'s result or exception, failing the test (not hanging) if it runs on."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = action()
        except BaseException as exc:  # handed to the test
            outcome["error"] = exc

    worker = threading.Thread(target=run, daemon=True)
    started = time.monotonic()
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"still rendering after {seconds} s"
    outcome["seconds"] = time.monotonic() - started
    return outcome


def llm_call(prompt: str, system: str | None = None) -> LLMCall:
    return LLMCall(
        "ask", prompt=prompt, system=system, input_type=str, model=ScriptedChatModel(["ok"])
    )


@pytest.mark.parametrize(("payload", "message"), HOSTILE)
def test_a_hostile_prompt_is_refused_quickly_naming_the_limit(payload: str, message: str) -> None:
    outcome = finishes(lambda: llm_call(payload).render("q"))
    error = outcome.get("error")
    assert isinstance(error, StepInputError), outcome
    assert "prompt cannot be rendered" in str(error)
    assert message in str(error)
    assert outcome["seconds"] < 5


@pytest.mark.parametrize(("payload", "message"), HOSTILE[:3] + HOSTILE[-3:])
def test_a_hostile_system_prompt_is_refused_too(payload: str, message: str) -> None:
    outcome = finishes(lambda: llm_call("{{ input }}", system=payload).render("q"))
    assert isinstance(outcome.get("error"), StepInputError), outcome
    assert message in str(outcome["error"])


@pytest.mark.parametrize(("payload", "message"), HOSTILE)
def test_a_hostile_chat_template_is_refused_quickly(payload: str, message: str) -> None:
    """A GGUF file is external input: its chat template runs on every request."""
    messages = [ChatMessage(role="user", content="hi")]
    outcome = finishes(
        lambda: ChatTemplate(payload, bos_token="<s>", eos_token="</s>").render(messages)
    )
    error = outcome.get("error")
    assert isinstance(error, ModelError), outcome
    assert "chat template failed" in str(error)
    assert message in str(error)
    assert outcome["seconds"] < 5


def test_sum_refuses_strings_as_jinja_does() -> None:
    with pytest.raises(StepInputError, match="can't sum strings"):
        llm_call("{{ ['a', 'b']|sum(start='') }}").render("q")


def test_the_output_limit_and_the_deadline_are_settings(monkeypatch) -> None:
    monkeypatch.setattr(templating, "MAX_OUTPUT_CHARS", 10)
    assert llm_call("{{ input }}").render("0123456789")[-1].content == "0123456789"
    with pytest.raises(StepInputError, match="longer than 10 characters"):
        llm_call("{{ input }}!").render("0123456789")
    with pytest.raises(StepInputError, match="the limit is 10$"):
        llm_call("{{ 'ab' * 6 }}").render("q")


def test_a_template_may_still_compute_within_the_limits() -> None:
    from jinja2 import StrictUndefined
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    template = (
        "{{ 'ab' * 3 }} {{ 2 ** 64 }} {{ [1, 2] * 2 }} {{ '%05.1f|%-4s|' % (3.14159, 'x') }}"
        "{{ '{:>6}'.format('r') }} {{ 'x'|center(5) }}|{{ 'a\nb'|indent(2) }} "
        "{{ (['a'] * 3)|join('-') }} {{ 'a' ~ 1 ~ [2] }} {{ 'aXa'.replace('X', 'yy') }} "
        "{% set t %}{% for i in range(3) %}{{ loop.index }}{{ ',' if not loop.last }}"
        "{% endfor %}{% endset %}{{ t }} {{ lipsum(1, html=False)|length > 0 }}"
        " {{ 12345678901|string }} {{ '{:,}'.format(12345678901) }} {{ 7 % 3 }} {{ 'a' + 'b' }}"
        " {{ [1, 2, 3]|sum }} {{ [[1], [2]]|sum(start=[]) }} {{ [{'p': 2}, {'p': 3}]|sum('p', 1) }}"
    )
    rendered = llm_call(template).render("q")[-1].content
    plain = ImmutableSandboxedEnvironment(undefined=StrictUndefined).from_string(template)
    assert rendered == plain.render(input="q")
    assert rendered.startswith("ababab 18446744073709551616 [1, 2, 1, 2] 003.1|x   |     r")
    assert rendered.endswith(
        " a-a-a a1[2] ayya 1,2,3 True 12345678901 12,345,678,901 1 ab 6 [1, 2] 6"
    )


def test_ordinary_templates_render_exactly_as_before() -> None:
    """The bounded environment prints what Jinja2's own sandbox prints."""
    from jinja2 import StrictUndefined
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    template = (
        "Use the passages. {% for p in passages %}[{{ loop.index }}/{{ loop.length }}] "
        "{{ p.title|upper }}: {{ p.text|truncate(20) }}\n{% else %}none{% endfor %}"
        "{% for k, v in meta|dictsort %}{{ k }}={{ v }};{% endfor %} {{ passages|length }} "
        "{% macro cite(n) %}[{{ n }}]{% endmacro %}{{ cite(1) }} Q: {{ question }} "
        "{{ passages|map(attribute='title')|join(', ') }} {{ meta }}"
    )
    context = {
        "question": "Why?",
        "passages": [{"title": f"t{i}", "text": "word " * 10} for i in range(3)],
        "meta": {"b": 2, "a": [1, "x"]},
    }
    plain = ImmutableSandboxedEnvironment(undefined=StrictUndefined).from_string(template)
    bounded = templating.BoundedSandbox(undefined=StrictUndefined).from_string(template)
    assert templating.render_bounded(bounded, context) == plain.render(context)
    messages = llm_call(template).render(context)
    assert messages[-1].content == plain.render(context)


def test_a_chat_template_renders_as_before() -> None:
    chatml = (
        "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
        "{{ '<|im_start|>system\nBe kind<|im_end|>\n' }}{% endif %}"
        "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
        "{{ messages|tojson if false }}"
    )
    prompt, stops = ChatTemplate(chatml, bos_token="<s>", eos_token="</s>").render(
        [ChatMessage(role="user", content="hi {{ x }}")]
    )
    assert prompt == (
        "<|im_start|>system\nBe kind<|im_end|>\n<|im_start|>user\nhi {{ x }}<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert stops == ["</s>"]


def test_a_chat_template_that_raises_still_says_why() -> None:
    template = "{{ raise_exception('no system role') }}"
    with pytest.raises(ModelError, match="refused the messages: no system role"):
        ChatTemplate(template, bos_token="", eos_token="").render([])
    with pytest.raises(ModelError, match="ZeroDivisionError"):
        ChatTemplate("{{ 1 / 0 }}", bos_token="", eos_token="").render([])


def test_a_huge_constant_does_not_hang_when_the_template_is_compiled(workspace) -> None:
    """Jinja2 folds constant expressions while compiling: a plain sandbox computes
    ``10**10**10**10`` there, in LLMCall's constructor or the prompt registry."""
    from slmops.prompts.registry import PromptRegistry

    payload = "{{ 10**(10**10) }}{{ 'a'|center(10**9) }}"
    outcome = finishes(lambda: PromptRegistry(workspace).add("big", payload))
    assert "error" not in outcome, outcome
    assert outcome["seconds"] < 5
    assert finishes(lambda: llm_call(payload))["seconds"] < 5
