"""Applications built from the composition core (app stacks arrive here)."""
