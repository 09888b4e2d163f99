"""The composition core: typed, validated, traced, cacheable steps and their compositions."""

from slmops.core.chain import Chain
from slmops.core.concurrent import BranchFailure, Concurrent, Map
from slmops.core.decision import Decision
from slmops.core.function import Function, function
from slmops.core.graph import Graph
from slmops.core.llm_call import LLMCall
from slmops.core.options import Retry
from slmops.core.runtime import Runtime, get_runtime, use_runtime, use_workspace
from slmops.core.step import RunResult, Step, StepState, current_step_path

__all__ = [
    "BranchFailure",
    "Chain",
    "Concurrent",
    "Decision",
    "Function",
    "Graph",
    "LLMCall",
    "Map",
    "Retry",
    "RunResult",
    "Runtime",
    "Step",
    "StepState",
    "current_step_path",
    "function",
    "get_runtime",
    "use_runtime",
    "use_workspace",
]
