"""Feedback alignment (Lillicrap et al. 2016) as a bioplaus-bench plugin (entry point
``bioplaus_bench.plugins``: ``bioplaus_feedback_alignment.algorithm``)."""

from .algorithm import FAParams, FeedbackAlignment

__all__ = ["FAParams", "FeedbackAlignment"]
