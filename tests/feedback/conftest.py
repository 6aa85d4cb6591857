"""Helpers for feedback tests: claim-and-decide through the real queue and review services."""

from __future__ import annotations

import pytest

from curation.services.queue import queue_claim_next


@pytest.fixture
def decide():
    """``decide(project, expert, verdict, **fields)``: claim the expert's next item and submit
    ``verdict`` on it through ``review_submit``; returns the ``ReviewResult``."""
    from feedback.services import review_submit

    def run(project, expert, verdict, **fields):
        claim = queue_claim_next(project=project, expert=expert)
        assert claim is not None, f"nothing left for {expert}"
        return review_submit(item=claim.item, expert=expert, verdict=verdict, **fields)

    return run
