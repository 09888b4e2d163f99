"""Values that the commands' help shows (defaults, lists of choices), copied from the library.

Typer builds the help of every command, and so evaluates every option's default and help
text, whenever ``slmops`` starts. Importing the library modules these values live in would
load numpy, the composition core and the model layer just to print ``--help``; these copies
cost nothing. tests/cli/test_startup.py checks that each one equals its source, so a change
there fails that test instead of going stale here.
"""

from __future__ import annotations

from pathlib import Path

TEMPLATES = ("rag", "chat", "classify", "extract", "router", "synth", "redteam", "judge")
"""slmops.apps.templates.TEMPLATES: the stack templates of ``slmops init --template``."""
DEFAULT_MODEL = "local:smollm2-135m"
"""slmops.apps.templates.DEFAULT_MODEL"""
DEFAULT_ANSWER_MODE = "extractive"
"""slmops.apps.templates.DEFAULT_ANSWER_MODE"""

DEFAULT_WRITE_WAIT = 600.0
"""slmops.data.corpus.DEFAULT_WRITE_WAIT: seconds an ingest waits for another one."""

FEEDBACK_KINDS: tuple[str, ...] = ("positive", "negative", "corrected", "reviewed", "any")
"""slmops.monitor.feedback.KINDS"""

FORMATS = (
    "gguf-f16",
    "gguf-q8_0",
    "gguf-q4_0",
    "gguf-q4_1",
    "gguf-q4_k_m",
    "gguf-q5_k_m",
    "adapter",
    "hf",
)
"""slmops.train.export.FORMATS: what ``slmops train export --format`` can write."""

PIPELINE_TEMPLATES = sorted(
    p.name for p in (Path(__file__).parents[1] / "pipelines" / "templates").iterdir() if p.is_dir()
)
"""slmops.pipelines.templates.PIPELINE_TEMPLATES: the folders of the pipeline templates."""
