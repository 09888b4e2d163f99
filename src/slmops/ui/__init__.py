"""The web console: server-rendered pages over a workspace (traces, feedback, monitor).

:func:`create_console` returns a FastAPI app; ``slmops ui`` serves it alone and
``slmops serve --ui`` mounts it beside the OpenAI API. Pages read the workspace through the
same library calls the CLI uses.
"""

from slmops.ui.app import create_console

__all__ = ["create_console"]
