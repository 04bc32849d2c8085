"""Prefect flows: orchestration only; every score is computed by library code."""
