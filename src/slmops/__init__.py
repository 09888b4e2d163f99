"""slmops: operate small language models end to end.

The public API is re-exported here; everything else is internal. Importing slmops loads no
model and touches no file: models load on first use, the workspace opens on first run.

The names below are imported on first access (PEP 562), so ``import slmops.cli.main`` or
``import slmops.errors`` does not pay for the composition core, the model backends and the
database layer; ``from slmops import Chain`` works as before.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from slmops.core import (
        BranchFailure,
        Chain,
        Concurrent,
        Decision,
        Function,
        Graph,
        LLMCall,
        Map,
        Retry,
        RunResult,
        Runtime,
        Step,
        StepState,
        function,
        use_runtime,
        use_workspace,
    )
    from slmops.errors import SlmopsError
    from slmops.models import (
        ChatMessage,
        ChatModel,
        ChatResult,
        Embedder,
        GenerationParams,
        load_chat_model,
        load_embedder,
    )
    from slmops.monitor.feedback import rate
    from slmops.store import Workspace

__version__ = "0.1.0"

_EXPORTS = {
    "BranchFailure": "slmops.core",
    "Chain": "slmops.core",
    "Concurrent": "slmops.core",
    "Decision": "slmops.core",
    "Function": "slmops.core",
    "Graph": "slmops.core",
    "LLMCall": "slmops.core",
    "Map": "slmops.core",
    "Retry": "slmops.core",
    "RunResult": "slmops.core",
    "Runtime": "slmops.core",
    "Step": "slmops.core",
    "StepState": "slmops.core",
    "function": "slmops.core",
    "use_runtime": "slmops.core",
    "use_workspace": "slmops.core",
    "SlmopsError": "slmops.errors",
    "ChatMessage": "slmops.models",
    "ChatModel": "slmops.models",
    "ChatResult": "slmops.models",
    "Embedder": "slmops.models",
    "GenerationParams": "slmops.models",
    "load_chat_model": "slmops.models",
    "load_embedder": "slmops.models",
    "rate": "slmops.monitor.feedback",
    "Workspace": "slmops.store",
}
"""Public name -> the module it comes from."""


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = [
    "BranchFailure",
    "Chain",
    "ChatMessage",
    "ChatModel",
    "ChatResult",
    "Concurrent",
    "Decision",
    "Embedder",
    "Function",
    "GenerationParams",
    "Graph",
    "LLMCall",
    "Map",
    "Retry",
    "RunResult",
    "Runtime",
    "SlmopsError",
    "Step",
    "StepState",
    "Workspace",
    "__version__",
    "function",
    "load_chat_model",
    "load_embedder",
    "rate",
    "use_runtime",
    "use_workspace",
]
