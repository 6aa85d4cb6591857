"""Feedback routes. Pages hang under /projects/<slug>/ (namespace ``feedback``); API routes
join /api/v1/ (namespace ``api``)."""

from django.urls import path

from feedback import api, api_monitoring
from feedback.views import monitoring, quality, review

app_name = "feedback"

urlpatterns = [
    # ---- review page (expert) ----
    path("<slug:slug>/review/", review.review_page, name="review"),
    path("<slug:slug>/review/decisions/", review.review_decisions, name="review_decisions"),
    path(
        "<slug:slug>/review/decisions/<int:review_id>/",
        review.review_decision,
        name="review_decision",
    ),
    path("<slug:slug>/review/<int:item_id>/", review.review_submit_view, name="review_submit"),
    path("<slug:slug>/review/<int:item_id>/renew/", review.review_renew, name="review_renew"),
    # ---- end review page ----
    # ---- quality pages (managers) ----
    path("<slug:slug>/quality/", quality.dashboard, name="dashboard"),
    path("<slug:slug>/adjudication/", quality.adjudication_list, name="adjudication_list"),
    path("<slug:slug>/adjudication/<int:item_id>/", quality.adjudicate, name="adjudicate"),
    path("<slug:slug>/items/<int:item_id>/gold/", quality.gold_set, name="gold_set"),
    path("<slug:slug>/items/<int:item_id>/gold/clear/", quality.gold_clear, name="gold_clear"),
    path("<slug:slug>/monitoring/", monitoring.monitoring_page, name="monitoring"),
    path(
        "<slug:slug>/monitoring/webhook/",
        monitoring.monitoring_webhook,
        name="monitoring_webhook",
    ),
    # ---- end quality pages ----
]

api_urlpatterns = [
    # ---- api ----
    path("items/<int:item_id>/reviews/", api.ItemReviewsApi.as_view(), name="review-list"),
    path("reviews/<int:review_id>/", api.ReviewDetailApi.as_view(), name="review-detail"),
    path(
        "projects/<slug:slug>/agreement/",
        api.ProjectAgreementApi.as_view(),
        name="project-agreement",
    ),
    path(
        "items/<int:item_id>/adjudicate/", api.ItemAdjudicateApi.as_view(), name="item-adjudicate"
    ),
    path("items/<int:item_id>/outcome/", api.ItemOutcomeApi.as_view(), name="item-outcome"),
    path("items/<int:item_id>/gold/", api.ItemGoldApi.as_view(), name="item-gold"),
    path(
        "projects/<slug:slug>/monitoring/",
        api_monitoring.ProjectMonitoringApi.as_view(),
        name="project-monitoring",
    ),
    path(
        "projects/<slug:slug>/alerts/",
        api_monitoring.ProjectAlertsApi.as_view(),
        name="project-alerts",
    ),
    # ---- end api ----
]

__all__ = ["api", "api_monitoring", "monitoring", "quality", "review"]
