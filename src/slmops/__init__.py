"""slmops: operate small language models end to end.

The public API is re-exported here; everything else is internal. Importing slmops loads no
model and touches no file: models load on first use, the workspace opens on first run.
"""

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
