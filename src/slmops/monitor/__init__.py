"""Monitoring: feedback, online evaluation, drift, alerts, retention."""
