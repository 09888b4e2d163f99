"""Fine-tuning: training datasets, LoRA and full fine-tuning runs tracked in MLflow, exports
that llama.cpp runs. Entry points: :class:`~slmops.train.runs.Training` and
:class:`~slmops.train.export.RunExporter`."""
