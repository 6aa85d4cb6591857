"""Writes for decisions: reviews, amendments, outcomes, adjudication and gold answers."""

from feedback.services.gold import gold_clear, gold_set
from feedback.services.outcomes import (
    item_adjudicate,
    item_outcome_refresh,
    outcome_decide,
    project_outcomes_refresh,
)
from feedback.services.reviews import (
    AlreadyDecided,
    ReviewResult,
    review_amend,
    review_submit,
    review_validate,
)

__all__ = [
    "AlreadyDecided",
    "ReviewResult",
    "gold_clear",
    "gold_set",
    "item_adjudicate",
    "item_outcome_refresh",
    "outcome_decide",
    "project_outcomes_refresh",
    "review_amend",
    "review_submit",
    "review_validate",
]
