"""Evaluation: test sets, metrics, runs, comparisons, gates and reports."""
