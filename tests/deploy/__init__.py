"""Checks of the deployment files: Dockerfile, compose.yaml, deploy/ (Helm chart, configs)."""
