"""The model registry: versions, aliases, model cards and gated promotion, on MLflow's Model
Registry. Entry points: :class:`~slmops.registry.store.ModelRegistry` and
:func:`~slmops.registry.promotion.promote`."""
