"""An OpenAI-compatible HTTP server for models and app stacks (``slmops serve``)."""
