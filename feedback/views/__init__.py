"""HTML views: the expert review page (review.py) and the managers' quality pages (quality.py)."""
