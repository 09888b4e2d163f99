"""Pipelines: the lifecycle operations chained as one declared, cached, resumable run."""

from slmops.pipelines.builder import Pipeline
from slmops.pipelines.ops import OPERATIONS, Check, StepContext
from slmops.pipelines.records import PipelineRecords, RunRecord, StepRecord
from slmops.pipelines.runner import PipelineRunner, RunOutcome, StepEvent
from slmops.pipelines.spec import PipelineError, PipelineSpec, find_pipeline, load_pipeline

__all__ = [
    "OPERATIONS",
    "Check",
    "Pipeline",
    "PipelineError",
    "PipelineRecords",
    "PipelineRunner",
    "PipelineSpec",
    "RunOutcome",
    "RunRecord",
    "StepContext",
    "StepEvent",
    "StepRecord",
    "find_pipeline",
    "load_pipeline",
]
