"""Prompt templates run in Jinja2's sandbox: known escapes end in a clear error or in
harmless text, and template syntax inside the data is never evaluated (OWASP LLM Top 10:
prompt injection reaching the template engine)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel

from slmops.core.llm_call import LLMCall
from slmops.core.runtime import Runtime, use_runtime
from slmops.errors import SlmopsError, StepDefinitionError, StepInputError
from slmops.prompts.registry import PromptRegistry
from slmops.store import Workspace
from tests.fakes import ScriptedChatModel

MARKER = "slmops-sandbox-escaped"


@pytest.fixture
def runtime() -> Iterator[Runtime]:
    """Traces in memory: these tests need no workspace (overrides the suite's fixture)."""
    rt = Runtime.in_memory()
    with use_runtime(rt):
        yield rt


class Question(BaseModel):
    question: str
    tags: list[str] = []


# Each payload is taken from published Jinja2/SSTI escape write-ups; {marker} is a file the
# payload would create if it ever ran a command.
ESCAPES = [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ ().__class__.__base__.__subclasses__() }}",
    "{% for c in [].__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}",
    "{{ cycler.__init__.__globals__.os.popen('touch {marker}').read() }}",
    "{{ joiner.__init__.__globals__.os }}",
    "{{ namespace.__init__.__globals__.os }}",
    "{{ lipsum.__globals__['os'].popen('touch {marker}').read() }}",
    "{{ lipsum.__globals__.__builtins__.__import__('os').system('touch {marker}') }}",
    "{{ self._TemplateReference__context }}",
    "{{ self._TemplateReference__context.cycler.__init__.__globals__.os }}",
    "{{ self.__init__.__globals__ }}",
    "{{ range.__self__ }}",
    "{{ input.__class__.__init__.__globals__ }}",
    "{{ input.__pydantic_validator__ }}",
    "{{ input.__dict__ }}",
    "{{ question.__class__.__mro__ }}",
    "{{ ''|attr('__class__') }}",
    "{{ ''|attr('\\x5f\\x5fclass\\x5f\\x5f')|attr('\\x5f\\x5fmro\\x5f\\x5f') }}",
    "{{ lipsum|attr('__globals__') }}",
    "{{ (input|attr('__class__'))|attr('__init__') }}",
    "{{ request.application.__globals__.__builtins__ }}",  # Flask's
    "{{ config.__class__.__init__.__globals__['os'] }}",  # Flask's
    # format strings: str.format reaches attributes through the field name
    "{{ '{0.__class__.__mro__}'.format('') }}",
    "{{ '{0.__globals__}'.format(lipsum) }}",
    "{{ '{x.__class__}'.format_map({'x': 1}) }}",
    "{{ '{0.__class__}'.format_map({}) }}",
    "{{ '%s'|format(''.__class__) }}",
    "{{ '{0.__self__}'.format([].pop) }}",
    # other objects' internals
    "{{ [].pop.__self__ }}",
    "{{ ''.join.__self__ }}",
    "{{ dict.mro() }}",
    "{{ {}.update.__self__ }}",
    "{{ input.__str__.__globals__ }}",
    # files: there is no loader, so nothing can be read or imported
    "{% include '/etc/passwd' %}",
    "{% extends '/etc/passwd' %}",
    "{% import 'os' as os %}{{ os }}",
    "{% from '/etc/hostname' import x %}",
    # resource limits the sandbox has, and Python errors a template can raise
    "{{ range(100001)|list|length }}",
    "{{ 1 / 0 }}",
    "{{ [].pop() }}",
    "{{ question + 1 }}",
]

# what an escape would have printed: classes, modules, functions' globals, process output
TELLTALES = ("<class", "<module", "__builtins__", "<function", "uid=", "Popen", "os.py")


@pytest.mark.parametrize("payload", ESCAPES)
@pytest.mark.parametrize("where", ["prompt", "system"])
def test_known_escapes_are_refused_or_harmless(payload: str, where: str, tmp_path: Path) -> None:
    marker = tmp_path / MARKER
    template = payload.replace("{marker}", str(marker))
    prompts = (
        {"prompt": template, "system": None}
        if where == "prompt"
        else {
            "prompt": "{{ question }}",
            "system": template,
        }
    )
    try:
        step = LLMCall("ask", input_type=Question, model=ScriptedChatModel(["ok"]), **prompts)
        messages = step.render(Question(question="hi", tags=["a"]))
    except StepInputError as exc:
        assert "prompt cannot be rendered" in str(exc)
    except StepDefinitionError as exc:  # refused when the template is compiled
        assert "prompt template" in str(exc)
    else:
        text = " ".join(m.content for m in messages)
        assert not any(sign in text for sign in TELLTALES), text
    assert not marker.exists()


def test_a_refused_escape_fails_the_run_with_a_step_error(runtime) -> None:
    step = LLMCall(
        "ask",
        prompt="{{ cycler.__init__.__globals__.os }}",
        input_type=str,
        model=ScriptedChatModel(["ok"]),
    )
    with pytest.raises(SlmopsError, match="unsafe") as raised:
        step.run("hi")
    assert "ask" in str(raised.value)  # the step path names where it failed


def test_harmless_output_is_just_text() -> None:
    step = LLMCall(
        "ask",
        prompt="{% set x = [].append %}{{ x is callable }} {{ '{0:>5}'.format(1) }} "
        "{{ lipsum(n=1)|length > 0 }} {{ input.model_config }}",
        input_type=Question,
        model=ScriptedChatModel(["ok"]),
    )
    assert step.render(Question(question="q"))[-1].content == "True     1 True {}"


@pytest.mark.parametrize(
    "data",
    [
        "{{ cycler.__init__.__globals__.os.popen('touch {marker}').read() }}",
        "{% include '/etc/passwd' %}",
        "{{ 7 * 7 }}",
        "{% raw %}{{ x }}{% endraw %}",
        "${7*7} #{7*7} <%= 7*7 %>",
    ],
)
def test_template_syntax_in_the_data_is_not_evaluated(data: str, tmp_path: Path) -> None:
    """A question (a user's, a retrieved passage, a model's earlier answer) that looks like
    a template is put into the prompt as the text it is."""
    marker = tmp_path / MARKER
    text = data.replace("{marker}", str(marker))
    step = LLMCall(
        "ask",
        prompt="Q: {{ question }} T: {{ tags|join(',') }}",
        system="About: {{ question }}",
        input_type=Question,
        model=ScriptedChatModel(["ok"]),
    )
    system, user = step.render(Question(question=text, tags=[text]))
    assert system.content == f"About: {text}"
    assert user.content == f"Q: {text} T: {text}"
    assert not marker.exists()


def test_a_stored_prompt_version_renders_in_the_same_sandbox(workspace: Workspace) -> None:
    version, _ = PromptRegistry(workspace).add(
        "evil", "{{ lipsum.__globals__['os'].popen('id').read() }}"
    )
    step = version.to_llm_call(input_type=str, model=ScriptedChatModel(["ok"]))
    with pytest.raises(StepInputError, match="unsafe"):
        step.render("hi")


@pytest.mark.parametrize(
    "payload",
    [
        "{{ tags.append('injected') }}",
        "{{ tags.clear() }}",
        "{{ tags.pop() }}",
        "{% set x = tags.extend %}{{ x(['injected']) }}",
        "{{ input.tags.insert(0, 'injected') }}",
        "{{ input.__setattr__('question', 'injected') }}",
    ],
)
def test_a_template_cannot_change_its_input(payload: str) -> None:
    """The lists and dicts a step renders are shared with the steps after it (a retrieve
    step's hits feed the answer and the citation check): a template only reads them."""
    value = Question(question="hi", tags=["a", "b"])
    step = LLMCall("ask", prompt=payload, input_type=Question, model=ScriptedChatModel(["ok"]))
    with pytest.raises(StepInputError, match="unsafe"):
        step.render(value)
    assert value == Question(question="hi", tags=["a", "b"])


def test_templates_still_compute_with_namespaces_and_new_lists() -> None:
    step = LLMCall(
        "ask",
        prompt="{% set ns = namespace(n=0) %}{% for t in tags %}{% set ns.n = ns.n + 1 %}"
        "{% endfor %}{{ ns.n }} {{ (tags + ['c'])|join(',') }} {{ dict(a=1) }}",
        input_type=Question,
        model=ScriptedChatModel(["ok"]),
    )
    assert step.render(Question(question="q", tags=["a", "b"]))[-1].content == "2 a,b,c {'a': 1}"
