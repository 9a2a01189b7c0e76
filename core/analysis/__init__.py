"""Seeing inside: token spans, similarity matrices, projections (pure functions)."""
