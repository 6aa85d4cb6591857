"""Feedback API: reviews, agreement, adjudication."""
