"""Feedback routes. Pages hang under /projects/<slug>/ (namespace ``feedback``); API routes
join /api/v1/ (namespace ``api``)."""

from django.urls import path

from feedback import api
from feedback.views import quality, review

app_name = "feedback"

urlpatterns = [
    # ---- review page (expert) ----
    # ---- end review page ----
    # ---- quality pages (managers) ----
    # ---- end quality pages ----
]

api_urlpatterns = [
    # ---- api ----
    # ---- end api ----
]

__all__ = ["api", "quality", "review"]
