"""Metrics: pure numeric cores in :mod:`speechqe.metrics.functional` and one adapter module
per metric, discovered by :mod:`speechqe.metrics.registry`."""

from .base import ItemScore, Metric, MetricSpec, OutputSpec, ScoringInput

__all__ = ["ItemScore", "Metric", "MetricSpec", "OutputSpec", "ScoringInput"]
