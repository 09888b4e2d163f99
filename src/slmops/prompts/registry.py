"""The prompt registry: Jinja2 templates with immutable versions, messages, tags and diffs.

Adding a template identical to the latest version creates no new version, so re-running a
setup script is harmless. ``NAME@VERSION``, ``NAME@TAG`` and ``NAME@latest`` name a version
anywhere a prompt is asked for; an LLMCall built from one records it on every span.
"""

from __future__ import annotations

import difflib
import hashlib
import time
from dataclasses import dataclass
from typing import Any

from jinja2 import TemplateError, TemplateSyntaxError, meta
from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError

from slmops.core.llm_call import LLMCall
from slmops.errors import BusyError, NotFoundError, SlmopsError
from slmops.models.templating import BoundedSandbox
from slmops.store.names import name_problem, tag_problem
from slmops.store.refs import select_version, split_ref
from slmops.store.schema import prompt_tags, prompts
from slmops.store.versioning import add_version, insert_version
from slmops.store.workspace import Workspace

# The environment LLM calls render with, so a template compiles here as it will there (a
# plain one would fold constants such as {{ 10**10**10 }} at compile time, and hang).
_parser = BoundedSandbox()
_TAG_ATTEMPTS = 5


class PromptError(SlmopsError):
    """A prompt cannot be stored or used as asked."""


@dataclass(frozen=True)
class PromptVersion:
    name: str
    version: int
    template: str
    system: str | None
    message: str
    sha256: str
    variables: list[str]
    created_at: float

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def to_llm_call(
        self, *, input_type: Any, step_name: str | None = None, **options: Any
    ) -> LLMCall:
        """An LLMCall rendering this version; its spans carry ``slmops.prompt.version``."""
        return LLMCall(
            step_name or self.name,
            prompt=self.template,
            system=self.system,
            input_type=input_type,
            prompt_version=self.ref,
            **options,
        )


def template_variables(text: str, where: str) -> list[str]:
    """The variables a template uses; raises PromptError naming the line of a syntax error.

    The template is compiled too, as an LLM call will: a template must not be stored that
    cannot be used."""
    try:
        tree = _parser.parse(text)
        variables = sorted(meta.find_undeclared_variables(tree))
        _parser.compile(tree)
    except TemplateSyntaxError as exc:
        raise PromptError(f"{where}: template error on line {exc.lineno}: {exc.message}") from None
    except TemplateError as exc:
        raise PromptError(f"{where}: template error: {exc}") from None
    except (RecursionError, SyntaxError):
        # Jinja parses recursively (a hundred nested brackets exhaust Python's stack) and the
        # Python it generates has limits of its own (100 nested {% if %} blocks are "too many
        # levels of indentation"): no prompt nests like that.
        raise PromptError(f"{where}: the template nests too deeply") from None
    return variables


class PromptRegistry:
    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace

    def add(
        self, name: str, template: str, *, system: str | None = None, message: str = ""
    ) -> tuple[PromptVersion, bool]:
        """Store a new version (``(version, True)``), or return the latest one unchanged
        (``(version, False)``) when the template and system prompt are identical to it."""
        problem = name_problem("prompt", name)
        if problem:
            raise PromptError(problem)
        if not template.strip():
            raise PromptError(f"prompt {name!r}: the template is empty")
        variables = template_variables(template, f"prompt {name!r}")
        if system:
            variables = sorted(
                set(variables) | set(template_variables(system, f"prompt {name!r} system"))
            )
        digest = hashlib.sha256(f"{system or ''}\x00{template}".encode()).hexdigest()

        def attempt() -> tuple[PromptVersion, bool]:
            latest = self._latest(name)
            if latest is not None and latest.sha256 == digest:
                return latest, False
            version = (latest.version if latest else 0) + 1
            row = {
                "name": name,
                "version": version,
                "template": template,
                "system": system,
                "message": message or f"version {version}",
                "sha256": digest,
                "variables": variables,
                "created_at": time.time(),
            }
            # Another process adding a version of this prompt at the same moment may take
            # this number first: the attempt is then made again after it.
            insert_version(self.workspace.engine, prompts, row, lambda: self._has(name, version))
            return self.get(f"{name}@{version}"), True

        return add_version("prompt", name, attempt)

    def _has(self, name: str, version: int) -> bool:
        with self.workspace.engine.connect() as connection:
            found = connection.execute(
                select(prompts.c.version).where(
                    (prompts.c.name == name) & (prompts.c.version == version)
                )
            ).first()
        return found is not None

    def _latest(self, name: str) -> PromptVersion | None:
        versions = self.log(name, missing_ok=True)
        return versions[0] if versions else None

    def names(self) -> list[str]:
        with self.workspace.engine.connect() as connection:
            return list(
                connection.execute(
                    select(prompts.c.name).group_by(prompts.c.name).order_by(prompts.c.name)
                ).scalars()
            )

    def log(self, name: str, *, missing_ok: bool = False) -> list[PromptVersion]:
        with self.workspace.engine.connect() as connection:
            rows = connection.execute(
                select(prompts).where(prompts.c.name == name).order_by(prompts.c.version.desc())
            ).all()
        if not rows and not missing_ok:
            known = ", ".join(self.names()) or "none yet"
            raise NotFoundError(f"no prompt named {name!r} (prompts: {known})")
        return [PromptVersion(**row._mapping) for row in rows]

    def tags(self, name: str) -> dict[str, int]:
        with self.workspace.engine.connect() as connection:
            rows = connection.execute(select(prompt_tags).where(prompt_tags.c.name == name)).all()
        return {row.tag: row.version for row in rows}

    def get(self, ref: str) -> PromptVersion:
        """``NAME``/``NAME@latest`` (newest), ``NAME@7`` or ``NAME@TAG``."""
        name, selector = split_ref(ref)
        return select_version("prompt", name, self.log(name), selector, lambda: self.tags(name))

    def tag(self, name: str, version: int, tag: str) -> None:
        problem = tag_problem(tag)
        if problem:
            raise PromptError(problem)
        target = self.get(f"{name}@{version}")
        for _ in range(_TAG_ATTEMPTS):
            try:
                with self.workspace.engine.begin() as connection:  # a tag moves if it exists
                    connection.execute(
                        delete(prompt_tags).where(
                            (prompt_tags.c.name == name) & (prompt_tags.c.tag == tag)
                        )
                    )
                    connection.execute(
                        insert(prompt_tags).values(name=name, tag=tag, version=target.version)
                    )
                return
            except IntegrityError:
                # Another process set this tag between our delete and insert (Postgres lets
                # both delete nothing): the tag goes to the last writer, so try again.
                continue
        raise BusyError(f"prompt {name!r}: other processes kept setting tag {tag!r}; run it again")

    def diff(self, name: str, old: int, new: int) -> str:
        """A unified diff of the system prompt and template between two versions."""
        before, after = self.get(f"{name}@{old}"), self.get(f"{name}@{new}")

        def text(version: PromptVersion) -> list[str]:
            system = [f"[system] {line}" for line in (version.system or "").splitlines()]
            return [*system, *version.template.splitlines()]

        return "\n".join(
            difflib.unified_diff(
                text(before), text(after), fromfile=before.ref, tofile=after.ref, lineterm=""
            )
        )
