"""Manifest errors: one test per kind of mistake, each naming the file and the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slmops.apps.build import build_stack
from slmops.apps.lock import write_lock
from slmops.apps.manifest import ManifestError, parse_manifest
from slmops.prompts.registry import PromptRegistry
from slmops.store import Workspace
from tests.apps.conftest import write_manifest

VALID = """
[stack]
name = "qa"

[stack.input]
question = "string"

[models]
chat = "local:smollm2-135m"

[corpora]
docs = "docs@latest"

[prompts]
answer = "qa-answer@latest"

[[steps]]
name = "retrieve"
kind = "retrieve"
corpus = "docs"
input = "input.question"

[[steps]]
name = "answer"
kind = "llm"
prompt = "answer"
model = "chat"
input = { question = "input.question", passages = "retrieve.hits" }
"""


def problem(text: str) -> str:
    with pytest.raises(ManifestError) as caught:
        parse_manifest(text, Path("qa/slmops.toml"))
    message = str(caught.value)
    assert message.startswith("qa/slmops.toml: ")
    return message


def test_the_reference_manifest_is_valid() -> None:
    loaded = parse_manifest(VALID, Path("qa/slmops.toml"))
    assert loaded.name == "qa"
    assert loaded.output_step == "answer"


def test_invalid_toml_names_the_line() -> None:
    assert "not valid TOML" in problem(VALID + "\n[stack\n")


def test_unknown_top_level_key() -> None:
    assert "unknown key 'modles'" in problem(VALID + '\n[modles]\nchat = "x"\n')


def test_unknown_key_in_a_step_names_the_step() -> None:
    text = VALID.replace('corpus = "docs"\n', 'corpus = "docs"\ntop_k = 3\n')
    assert "unknown key 'steps[1] (retrieve).top_k'" in problem(text)


def test_missing_required_key() -> None:
    assert "missing key 'stack.name'" in problem(VALID.replace('name = "qa"\n', "", 1))


def test_unknown_step_kind() -> None:
    message = problem(VALID.replace('kind = "retrieve"', 'kind = "search"'))
    assert "steps[1] (retrieve).kind' must be one of retrieve, llm" in message


def test_out_of_range_value() -> None:
    message = problem(
        VALID.replace('input = "input.question"\n', 'input = "input.question"\nk = 0\n')
    )
    assert "'steps[1] (retrieve).k': Input should be greater than or equal to 1" in message


def test_missing_model() -> None:
    message = problem(VALID.replace('model = "chat"', 'model = "big"'))
    assert "steps[2] (answer): model 'big' is not declared in [models] (declared: chat)" in message


def test_undeclared_prompt() -> None:
    message = problem(VALID.replace('prompt = "answer"', 'prompt = "reply"'))
    assert "prompt 'reply' is not declared in [prompts]" in message


def test_undeclared_corpus() -> None:
    message = problem(VALID.replace('corpus = "docs"\n', 'corpus = "wiki"\n'))
    assert "corpus 'wiki' is not declared in [corpora]" in message


def test_malformed_reference() -> None:
    assert "corpora.docs: 'Docs@' is not NAME" in problem(VALID.replace('"docs@latest"', '"Docs@"'))


def test_input_path_to_a_later_or_unknown_step() -> None:
    text = VALID.replace('input = "input.question"\n', 'input = "answer"\n', 1)
    message = problem(text)
    assert "steps[1] (retrieve).input: 'answer' refers to 'answer', which is not" in message


def test_input_path_to_a_missing_input_field() -> None:
    message = problem(VALID.replace('input = "input.question"', 'input = "input.query"', 1))
    assert "the stack input has no field 'query'" in message


def test_unknown_field_type() -> None:
    message = problem(VALID.replace('question = "string"', 'question = "text"'))
    assert "unknown type 'text'" in message


def test_duplicate_step_name() -> None:
    text = VALID.replace('name = "answer"', 'name = "retrieve"')
    assert "the name 'retrieve' is already used" in problem(text)


def test_stack_step_must_be_a_declared_dependency() -> None:
    text = VALID + '\n[[steps]]\nname = "inner"\nkind = "stack"\nstack = "other"\n'
    assert "stack 'other' must be listed in stack.depends_on" in problem(text)


def test_route_labels_must_match_the_classifier() -> None:
    text = VALID.replace(
        'model = "chat"\ninput', 'model = "chat"\nlabels = ["a", "b"]\ninput'
    ).replace('name = "qa"\n', 'name = "qa"\ndepends_on = ["x", "y"]\n', 1) + (
        '\n[[steps]]\nname = "go"\nkind = "route"\nby = "answer.label"\n'
        '[steps.routes]\na = "x"\nc = "y"\n'
    )
    assert "routes ['a', 'c'] must match the labels of step 'answer' ['a', 'b']" in problem(text)


CLASSIFY = """
[[steps]]
name = "pick"
kind = "classify"
input = "input.question"
[steps.labels.docs]
corpus = "docs"
[steps.labels.chat]
examples = ["Hello!"]
"""


def test_classify_labels_need_evidence_and_declared_corpora() -> None:
    assert parse_manifest(VALID + CLASSIFY, Path("qa/slmops.toml")).step("pick").kind == "classify"
    empty = CLASSIFY.replace('examples = ["Hello!"]', 'description = " "')
    message = problem(VALID + empty)
    assert "'steps[3] (pick).labels.chat': a label needs a description, examples or a corpus" in (
        message
    )
    message = problem(VALID + CLASSIFY.replace('corpus = "docs"', 'corpus = "wiki"'))
    assert "steps[3] (pick): label 'docs': corpus 'wiki' is not declared in [corpora]" in message
    one_label = CLASSIFY.replace('[steps.labels.chat]\nexamples = ["Hello!"]\n', "")
    assert "'steps[3] (pick).labels': Dictionary should have at least 2 items" in problem(
        VALID + one_label
    )


def test_route_labels_must_match_a_similarity_classifier() -> None:
    text = (
        VALID.replace('name = "qa"\n', 'name = "qa"\ndepends_on = ["x"]\n', 1)
        + CLASSIFY
        + (
            '\n[[steps]]\nname = "go"\nkind = "route"\nby = "pick.label"\n'
            '[steps.routes]\ndocs = "x"\n'
        )
    )
    assert "routes ['docs'] must match the labels of step 'pick' ['chat', 'docs']" in problem(text)


def test_bad_stack_name() -> None:
    assert "stack.name: stack name 'Q A'" in problem(VALID.replace('name = "qa"', 'name = "Q A"'))


# --- errors found when the references are resolved ---------------------------------------


def _register_prompt(workspace: Workspace) -> None:
    PromptRegistry(workspace).add("qa-answer", "{{ question }}")


def test_a_corpus_version_that_does_not_exist(
    workspace: Workspace, stacks_dir: Path, handbook: object
) -> None:
    _register_prompt(workspace)
    write_manifest(stacks_dir, "qa", VALID.replace("docs@latest", "docs@9"))
    with pytest.raises(ManifestError, match=r"corpora.docs: corpus 'docs' has no version 9"):
        build_stack("qa", workspace)


def test_a_corpus_that_does_not_exist_says_how_to_make_it(
    workspace: Workspace, stacks_dir: Path
) -> None:
    _register_prompt(workspace)
    write_manifest(stacks_dir, "qa", VALID)
    with pytest.raises(ManifestError, match=r"slmops data ingest PATH --corpus docs"):
        build_stack("qa", workspace)


def test_a_prompt_version_that_does_not_exist(
    workspace: Workspace, stacks_dir: Path, handbook: object
) -> None:
    _register_prompt(workspace)
    write_manifest(stacks_dir, "qa", VALID.replace("qa-answer@latest", "qa-answer@4"))
    with pytest.raises(ManifestError, match=r"prompts.answer: prompt 'qa-answer' has no version 4"):
        build_stack("qa", workspace)


def test_an_unknown_model_scheme(workspace: Workspace, stacks_dir: Path, handbook: object) -> None:
    _register_prompt(workspace)
    write_manifest(stacks_dir, "qa", VALID.replace("local:smollm2-135m", "ollama:phi"))
    with pytest.raises(ManifestError, match=r"models.chat: .*unknown scheme 'ollama'"):
        build_stack("qa", workspace)


def test_a_missing_stack(workspace: Workspace, stacks_dir: Path) -> None:
    with pytest.raises(ManifestError, match=r"no stack 'nope'.*slmops init nope"):
        build_stack("nope", workspace)


def test_a_function_that_cannot_be_imported(workspace: Workspace, stacks_dir: Path) -> None:
    write_manifest(
        stacks_dir,
        "fn",
        '[stack]\nname = "fn"\n[[steps]]\nname = "f"\nkind = "function"\n'
        'call = "no_such_module:run"\n',
    )
    with pytest.raises(ManifestError, match=r"cannot import 'no_such_module'"):
        build_stack("fn", workspace)


def test_a_stale_lock_is_refused(workspace: Workspace, stacks_dir: Path, handbook: object) -> None:
    _register_prompt(workspace)
    path = write_manifest(stacks_dir, "qa", VALID)
    stack = build_stack("qa", workspace)
    write_lock(stack.manifest, workspace)
    path.write_text(VALID.replace("k = 4", "") + "\n# edited\n", encoding="utf-8")
    with pytest.raises(ManifestError, match=r"made for an earlier version of slmops.toml"):
        build_stack("qa", workspace)


def test_a_broken_lock_is_refused(workspace: Workspace, stacks_dir: Path, handbook: object) -> None:
    _register_prompt(workspace)
    write_manifest(stacks_dir, "qa", VALID)
    (stacks_dir / "qa" / "slmops.lock").write_text(json.dumps({"stack": "qa"}))
    with pytest.raises(ManifestError, match=r"not a valid lock file"):
        build_stack("qa", workspace)


def test_a_dependency_cycle_is_refused(workspace: Workspace, stacks_dir: Path) -> None:
    def stack(name: str, uses: str) -> str:
        return (
            f'[stack]\nname = "{name}"\ndepends_on = ["{uses}"]\n'
            f'[[steps]]\nname = "inner"\nkind = "stack"\nstack = "{uses}"\n'
        )

    write_manifest(stacks_dir, "a", stack("a", "b"))
    write_manifest(stacks_dir, "b", stack("b", "c"))
    write_manifest(stacks_dir, "c", stack("c", "a"))
    with pytest.raises(ManifestError, match=r"stack dependency cycle: a -> b -> c -> a"):
        build_stack("a", workspace)


def test_a_lock_pins_the_model_weights(
    workspace: Workspace, stacks_dir: Path, handbook: object, tmp_path: Path
) -> None:
    _register_prompt(workspace)
    weights = tmp_path / "model.gguf"
    weights.write_bytes(b"GGUF weights, version one")
    write_manifest(stacks_dir, "qa", VALID.replace("local:smollm2-135m", f"gguf:{weights}"))
    stack = build_stack("qa", workspace)
    lock = write_lock(stack.manifest, workspace)
    assert lock.model_digests["chat"] == stack.resolved.model_digests["chat"]
    assert str(lock.model_digests["chat"]).startswith("sha256:")
    build_stack("qa", workspace)  # same weights: fine

    weights.write_bytes(b"GGUF weights, version two")  # replaced under the same name
    with pytest.raises(ManifestError, match=r"models.chat: the weights of gguf:.* are not the"):
        build_stack("qa", workspace)
    # trying another model on purpose is not a mismatch; ignoring the lock is not either
    other = build_stack("qa", workspace, models={"chat": "local:smollm2-135m"})
    assert other.resolved.models["chat"] == "local:smollm2-135m"
    assert build_stack("qa", workspace, use_lock=False).resolved.locked is False
