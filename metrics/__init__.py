"""Metrics: pure numeric cores in :mod:`speechqe.metrics.functional` and one adapter module
per metric, discovered by :mod:`speechqe.plugins`."""

from speechqe.metric import ItemScore, Metric, MetricSpec, OutputSpec, ScoringInput

__all__ = ["ItemScore", "Metric", "MetricSpec", "OutputSpec", "ScoringInput"]
