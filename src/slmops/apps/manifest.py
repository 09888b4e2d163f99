"""The app stack manifest, ``slmops.toml``: its schema, loading and cross-checks.

A manifest declares one stack: its input fields, the models (by URI), corpora and prompts it
uses (by versioned reference), its settings, the stacks it depends on, and its steps. Steps
read from and write to a *state*: ``input`` (the validated stack input), ``settings``, and
one entry per step holding that step's output. A step's ``input`` is a path into the state
(``input.question``, ``retrieve.hits``) or a table of such paths.

Every problem is reported as a :class:`ManifestError` naming the file and the key.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from slmops.errors import ConfigError
from slmops.store.names import name_problem

MANIFEST_FILE = "slmops.toml"

FIELD_TYPES = ("string", "integer", "number", "boolean", "list[string]", "messages", "any")
"""Types a stack input field or an LLM's structured output field may declare; a list of
values (``[1, 2, 3]``) declares one of those values."""


class ManifestError(ConfigError):
    """A stack manifest is malformed, inconsistent, or names something that does not exist."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldSpec(_Strict):
    type: str | list[str | int | float | bool] = "string"
    default: Any = None
    required: bool = True
    description: str = ""

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: Any) -> Any:
        if isinstance(value, str) and value not in FIELD_TYPES:
            raise ValueError(f"unknown type {value!r}; use one of {', '.join(FIELD_TYPES)}")
        if isinstance(value, list) and not value:
            raise ValueError("a list of allowed values must not be empty")
        return value


def _field_spec(value: Any) -> Any:
    """``"string"`` is short for ``{type = "string"}``; ``"integer?"`` is optional."""
    if isinstance(value, str):
        optional = value.endswith("?")
        return {"type": value.rstrip("?"), "required": not optional}
    if isinstance(value, list):
        return {"type": value}
    if isinstance(value, dict) and "default" in value:
        return {"required": False, **value}
    return value


def _field_specs(value: dict[str, Any]) -> dict[str, Any]:
    """The shorthands expanded. Each is then validated as a FieldSpec by the field's own type,
    not here: pydantic then names the field in an error (``stack.input.question.type``),
    which it drops for an error raised inside a validator (``stack.input.type``)."""
    return {name: _field_spec(spec) for name, spec in value.items()}


InputPath = str | dict[str, str]
"""Where a step's input comes from: one state path, or a table of variable -> path."""


class StepBase(_Strict):
    name: str
    input: InputPath | None = None
    description: str = ""
    retry: int = Field(1, ge=1, le=10)
    timeout_s: float | None = Field(None, gt=0)
    cache: bool = False
    # A state path: the step runs only when the value there is true, else its output is
    # None (a rag stack skips its model when settings.answer is "extractive").
    when: str | None = None


class RetrieveStep(StepBase):
    kind: Literal["retrieve"]
    corpus: str
    k: int = Field(4, ge=1, le=100)
    mode: Literal["vector", "fts", "hybrid"] = "hybrid"
    where: dict[str, Any] = {}


class LLMStep(StepBase):
    kind: Literal["llm"]
    prompt: str
    model: str = "chat"
    max_tokens: int = Field(256, ge=1, le=32768)
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    seed: int | None = None
    stop: list[str] = []
    labels: list[str] | None = None
    fields: dict[str, FieldSpec] | None = None
    for_each: str | None = None

    @field_validator("fields", mode="before")
    @classmethod
    def _fields(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return _field_specs(value)
        return value


class FunctionStep(StepBase):
    kind: Literal["function"]
    call: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class StackStep(StepBase):
    kind: Literal["stack"]
    stack: str


class RouteStep(StepBase):
    kind: Literal["route"]
    by: str
    routes: dict[str, str] = Field(min_length=1)


class CiteStep(StepBase):
    kind: Literal["cite"]
    question: str = "input.question"
    answer: str | None = None
    retrieval: str
    selection: str | None = None
    min_relevance: float = Field(0.3, ge=-1.0, le=1.0)
    min_support: float = Field(0.45, ge=-1.0, le=1.0)
    min_score: float = Field(0.5, ge=-100.0, le=100.0)  # a cross-encoder's scores are logits
    max_citations: int = Field(3, ge=1, le=20)
    refusal: str = "I cannot answer that from the documents I have."

    @model_validator(mode="after")
    def _something_to_cite(self) -> CiteStep:
        if self.answer is None and self.selection is None:
            raise ValueError("a cite step needs an 'answer' or a 'selection' (or both)")
        return self


AnswerMode = Literal["extractive", "hybrid", "generative"]
ANSWER_MODES: tuple[str, ...] = get_args(AnswerMode)


class SelectStep(StepBase):
    kind: Literal["select"]
    question: str = "input.question"
    retrieval: str
    # The answer mode: one of ANSWER_MODES, or a state path holding one (settings.answer).
    mode: str = "extractive"
    scorer: str | None = None  # "cross-encoder:/path": replaces the embedder's cosine
    lexical_weight: float = Field(0.2, ge=0.0, le=10.0)
    margin: float = Field(0.1, ge=0.0, le=10.0)
    max_answer_sentences: int = Field(2, ge=1, le=5)
    context_sentences: int = Field(3, ge=1, le=20)


class LabelSpec(_Strict):
    """A classify label's evidence: what it means, examples of it, and/or a corpus alias
    whose passages all count as examples."""

    description: str = ""
    examples: list[str] = []
    corpus: str | None = None

    @model_validator(mode="after")
    def _some_evidence(self) -> LabelSpec:
        texts = [self.description, *self.examples]
        if self.corpus is None and not any(t.strip() for t in texts):
            raise ValueError("a label needs a description, examples or a corpus")
        return self


class ClassifyStep(StepBase):
    kind: Literal["classify"]
    labels: dict[str, LabelSpec] = Field(min_length=2)


class SampleStep(StepBase):
    kind: Literal["sample"]
    corpus: str
    n: int | str = 5
    seed: int = 0
    min_chars: int = Field(200, ge=0)


StepSpec = Annotated[
    RetrieveStep
    | LLMStep
    | FunctionStep
    | StackStep
    | RouteStep
    | CiteStep
    | SelectStep
    | SampleStep
    | ClassifyStep,
    Field(discriminator="kind"),
]
STEP_KINDS = (
    "retrieve",
    "llm",
    "function",
    "stack",
    "route",
    "cite",
    "select",
    "sample",
    "classify",
)


class StackSection(_Strict):
    name: str
    description: str = ""
    template: str | None = None
    output: str | None = None
    depends_on: list[str] = []
    input: dict[str, FieldSpec] = Field(default_factory=lambda: {"text": FieldSpec()})

    @field_validator("input", mode="before")
    @classmethod
    def _input(cls, value: Any) -> Any:
        if isinstance(value, dict):
            if not value:
                raise ValueError("a stack needs at least one input field")
            return _field_specs(value)
        return value


class Manifest(_Strict):
    stack: StackSection
    models: dict[str, str] = {}
    corpora: dict[str, str] = {}
    prompts: dict[str, str] = {}
    settings: dict[str, Any] = {}
    steps: list[StepSpec] = Field(min_length=1)


@dataclass(frozen=True)
class LoadedManifest:
    """A validated manifest and where it came from."""

    manifest: Manifest
    path: Path
    sha256: str

    @property
    def name(self) -> str:
        return self.manifest.stack.name

    @property
    def directory(self) -> Path:
        return self.path.parent

    def step(self, name: str) -> StepSpec:
        return next(s for s in self.manifest.steps if s.name == name)

    @property
    def output_step(self) -> str:
        return self.manifest.stack.output or self.manifest.steps[-1].name

    def stack_references(self) -> list[str]:
        """Stacks this one runs (stack steps and route targets), in step order."""
        refs: list[str] = []
        for step in self.manifest.steps:
            if isinstance(step, StackStep):
                refs.append(step.stack)
            elif isinstance(step, RouteStep):
                refs.extend(step.routes.values())
        return refs


def _location(loc: tuple[Any, ...], data: Mapping[str, Any]) -> str:
    """``steps[2] (answer).max_tokens`` from pydantic's location tuple."""
    parts: list[str] = []
    node: Any = data
    for item in loc:
        if isinstance(item, int):
            node = node[item] if isinstance(node, list) and item < len(node) else None
            # The item may be anything the file holds (a number, a list): only a table names it.
            name = node.get("name") if isinstance(node, dict) else None
            suffix = f"[{item + 1}]" + (f" ({name})" if isinstance(name, str) else "")
            if parts:
                parts[-1] += suffix
            else:
                parts.append(suffix)
            continue
        if item in STEP_KINDS and isinstance(node, dict) and node.get("kind") == item:
            continue  # the discriminator's own level adds nothing for a reader
        parts.append(str(item))
        node = node.get(item) if isinstance(node, dict) else None
    return ".".join(parts)


def _describe(exc: ValidationError, data: Mapping[str, Any]) -> str:
    error = exc.errors()[0]
    where = _location(tuple(error["loc"]), data)
    if error["type"] == "extra_forbidden":
        return f"unknown key '{where}'"
    if error["type"] == "missing":
        return f"missing key '{where}'"
    if error["type"] == "union_tag_invalid":
        return f"'{where}.kind' must be one of {', '.join(STEP_KINDS)}"
    if error["type"] == "union_tag_not_found":
        return f"'{where}' needs a 'kind' ({', '.join(STEP_KINDS)})"
    message = error["msg"].removeprefix("Value error, ")
    return f"'{where}': {message}" if where else message


def parse_manifest(text: str, path: Path) -> LoadedManifest:
    """Validate manifest text; raises ManifestError naming ``path`` and the key at fault."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(f"{path}: not valid TOML: {exc}") from None
    except RecursionError:
        # tomllib parses nested arrays and inline tables recursively: a few hundred levels
        # exhaust Python's stack. No manifest nests like that; say so, not a traceback.
        raise ManifestError(f"{path}: not valid TOML: values are nested too deeply") from None
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as exc:
        raise ManifestError(f"{path}: {_describe(exc, data)}") from None
    loaded = LoadedManifest(manifest, path, hashlib.sha256(text.encode()).hexdigest())
    problem = check_references(manifest)
    if problem:
        raise ManifestError(f"{path}: {problem}")
    return loaded


def load_manifest(path: Path) -> LoadedManifest:
    path = path / MANIFEST_FILE if path.is_dir() else path
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError(f"no stack manifest at {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: cannot be read: {exc}") from None
    return parse_manifest(text, path)


# --- cross-references ----------------------------------------------------------------------


def _path_root(path: str) -> str:
    return path.split(".", 1)[0]


def _input_paths(step: StepBase) -> list[tuple[str, str]]:
    """(key, path) for every state path a step reads."""
    paths: list[tuple[str, str]] = []
    if isinstance(step.input, str):
        paths.append(("input", step.input))
    elif isinstance(step.input, dict):
        paths += [(f"input.{var}", p) for var, p in step.input.items()]
    if isinstance(step, LLMStep) and step.for_each:
        paths.append(("for_each", step.for_each))
    if isinstance(step, RouteStep):
        paths.append(("by", step.by))
    if isinstance(step, CiteStep):
        paths.append(("question", step.question))
        paths += [("answer", step.answer)] if step.answer is not None else []
        paths.append(("retrieval", step.retrieval))
        paths += [("selection", step.selection)] if step.selection is not None else []
    if isinstance(step, SelectStep):
        paths += [("question", step.question), ("retrieval", step.retrieval)]
        paths += [("mode", step.mode)] if "." in step.mode else []
    if step.when is not None:
        paths.append(("when", step.when))
    if isinstance(step, SampleStep) and isinstance(step.n, str):
        paths.append(("n", step.n))
    return paths


def check_references(manifest: Manifest) -> str | None:
    """The first inconsistency between the manifest's sections, or None."""
    stack = manifest.stack
    problem = name_problem("stack", stack.name)
    if problem:
        return f"stack.name: {problem}"
    for section, kind, refs in (
        ("corpora", "corpus", manifest.corpora),
        ("prompts", "prompt", manifest.prompts),
    ):
        for alias, ref in refs.items():
            name, _, selector = ref.partition("@")
            if name_problem(kind, name) or ("@" in ref and not selector):
                return (
                    f"{section}.{alias}: {ref!r} is not NAME, NAME@VERSION, NAME@TAG or NAME@latest"
                )
    for field, spec in stack.input.items():
        if spec.required and spec.default is not None:
            return f"stack.input.{field}: a field with a default cannot be required"
    available = {"input", "settings"}
    for index, step in enumerate(manifest.steps, start=1):
        where = f"steps[{index}] ({step.name})"
        problem = name_problem("step", step.name)
        if problem:
            return f"{where}: {problem}"
        if step.name in available:
            return f"{where}: the name '{step.name}' is already used"
        for key, path in _input_paths(step):
            root = _path_root(path)
            if root not in available:
                return (
                    f"{where}.{key}: '{path}' refers to '{root}', which is not the input, the "
                    f"settings or an earlier step (earlier: {', '.join(sorted(available))})"
                )
            if root == "input" and "." in path:
                field = path.split(".")[1]
                if field not in stack.input:
                    return f"{where}.{key}: the stack input has no field '{field}'"
        problem = _step_problem(manifest, step)
        if problem:
            return f"{where}: {problem}"
        available.add(step.name)
    if stack.output and stack.output not in {s.name for s in manifest.steps}:
        return f"stack.output: no step is named '{stack.output}'"
    for dependency in stack.depends_on:
        if not dependency.strip():
            return "stack.depends_on: an entry is empty"
    return None


def _step_problem(manifest: Manifest, step: StepSpec) -> str | None:
    depends_on = set(manifest.stack.depends_on)
    if isinstance(step, RetrieveStep | SampleStep) and step.corpus not in manifest.corpora:
        return f"corpus '{step.corpus}' is not declared in [corpora] ({_known(manifest.corpora)})"
    if isinstance(step, LLMStep):
        if step.model not in manifest.models:
            return f"model '{step.model}' is not declared in [models] ({_known(manifest.models)})"
        if step.prompt not in manifest.prompts:
            return (
                f"prompt '{step.prompt}' is not declared in [prompts] ({_known(manifest.prompts)})"
            )
        if step.labels is not None and step.fields is not None:
            return "give 'labels' or 'fields', not both"
        if step.labels is not None and len(set(step.labels)) < 1:
            return "'labels' must not be empty"
    if isinstance(step, ClassifyStep):
        for label, spec in step.labels.items():
            if spec.corpus is not None and spec.corpus not in manifest.corpora:
                return (
                    f"label '{label}': corpus '{spec.corpus}' is not declared in [corpora] "
                    f"({_known(manifest.corpora)})"
                )
    if isinstance(step, SelectStep) and step.mode not in ANSWER_MODES:
        if "." not in step.mode:
            return (
                f"mode: {step.mode!r} is not one of {', '.join(ANSWER_MODES)} or a state path "
                "such as settings.answer"
            )
        root, _, key = step.mode.partition(".")
        value = manifest.settings.get(key) if root == "settings" else None
        if root == "settings" and value not in ANSWER_MODES:
            found = f"it is {value!r}" if key in manifest.settings else "it is not set"
            return f"mode: settings.{key} must be one of {', '.join(ANSWER_MODES)} ({found})"
    if isinstance(step, StackStep) and step.stack not in depends_on:
        return f"stack '{step.stack}' must be listed in stack.depends_on"
    if isinstance(step, RouteStep):
        for label, target in step.routes.items():
            if target not in depends_on:
                return f"route '{label}' -> stack '{target}' must be listed in stack.depends_on"
        by = next((s for s in manifest.steps if s.name == _path_root(step.by)), None)
        labels = by.labels if isinstance(by, LLMStep | ClassifyStep) else None
        if by is not None and labels is not None and set(labels) != set(step.routes):
            return (
                f"routes {sorted(step.routes)} must match the labels of step '{by.name}' "
                f"{sorted(labels)}"
            )
    return None


def _known(section: Mapping[str, Any]) -> str:
    return f"declared: {', '.join(sorted(section))}" if section else "none declared"
