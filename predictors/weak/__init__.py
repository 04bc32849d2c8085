"""Weak learners on pooled encoder features (features, learners with pickle-free persistence)."""
