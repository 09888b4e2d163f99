"""The ``slmops`` command: thin shells over library calls, one module per command group."""
