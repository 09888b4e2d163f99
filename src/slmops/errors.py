"""The slmops exception hierarchy.

Every error a user can cause or act on derives from :class:`SlmopsError` and carries a
message that says what went wrong and, where possible, what to do. The CLI prints these as
one red line and exits non-zero; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Sequence


class SlmopsError(Exception):
    """Base of every error slmops raises on purpose."""


class ConfigError(SlmopsError):
    """A configuration file or setting is missing, malformed or inconsistent."""


class WorkspaceError(SlmopsError):
    """The workspace (metadata database or artifact store) cannot be opened or used."""


class NotFoundError(SlmopsError):
    """A named object (trace, step, model, ...) does not exist."""


class BusyError(SlmopsError):
    """Another process was writing the same thing at the same moment and this write gave
    way, committing nothing; running it again succeeds once the other is done."""


# --- models -------------------------------------------------------------------------------


class ModelError(SlmopsError):
    """A model could not be loaded or failed while generating."""


class UnknownModelError(ModelError):
    """A model URI names a scheme or a built-in model slmops does not know."""


class ModelUnavailableError(ModelError):
    """A model server could not be reached, or a model file is missing."""


# --- composition core ---------------------------------------------------------------------


class StepError(SlmopsError):
    """A step failed. ``path`` names the step inside its composition, e.g. ``qa/answer``."""

    def __init__(self, message: str, *, path: str = "") -> None:
        self.path = path
        super().__init__(f"step '{path}': {message}" if path else message)


class StepDefinitionError(StepError):
    """A step or composition is wired wrongly (detected at construction, before any run)."""


class StepInputError(StepError):
    """A step's input failed validation. ``field`` names the offending field when known."""

    def __init__(self, message: str, *, path: str = "", field: str | None = None) -> None:
        self.field = field
        super().__init__(message, path=path)


class StepOutputError(StepError):
    """A step's output failed validation. ``field`` names the offending field when known."""

    def __init__(self, message: str, *, path: str = "", field: str | None = None) -> None:
        self.field = field
        super().__init__(message, path=path)


class StepTimeoutError(StepError):
    """A step did not finish within its timeout."""


class RoutingError(StepError):
    """A Decision's router returned a key that names no branch."""


class ConcurrentError(StepError):
    """One or more branches of a Concurrent step failed under the ``wait_all`` policy."""

    def __init__(self, message: str, *, path: str = "", errors: Sequence[BaseException]) -> None:
        self.errors = errors
        super().__init__(message, path=path)


class GraphRenderError(SlmopsError):
    """A graph could not be rendered to an image (usually: Graphviz is not installed)."""


class StepExecutionError(StepError):
    """A step's own code raised an exception that is not an slmops error; the original is
    kept as ``__cause__``."""
