"""Versioned prompt templates stored in the workspace."""
