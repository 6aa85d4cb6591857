"""Feedback routes. Pages hang under /projects/<slug>/ (namespace ``feedback``); API routes
join /api/v1/ (namespace ``api``)."""

from django.urls import path

from feedback import api, api_monitoring
from feedback.labelstudio import api as ls_api
from feedback.labelstudio import views as ls_views
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
    # ---- label studio (managers) ----
    path("<slug:slug>/label-studio/", ls_views.labelstudio_page, name="labelstudio"),
    path(
        "<slug:slug>/label-studio/connection/",
        ls_views.labelstudio_connection,
        name="labelstudio_connection",
    ),
    path("<slug:slug>/label-studio/test/", ls_views.labelstudio_test, name="labelstudio_test"),
    path(
        "<slug:slug>/label-studio/import/", ls_views.labelstudio_import, name="labelstudio_import"
    ),
    path(
        "<slug:slug>/label-studio/jobs/<int:job_id>/",
        ls_views.labelstudio_job_progress,
        name="labelstudio_job_progress",
    ),
    path(
        "<slug:slug>/label-studio/<str:kind>/",
        ls_views.labelstudio_job_start,
        name="labelstudio_job",
    ),
    # ---- end label studio ----
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
    # ---- label studio api ----
    path(
        "projects/<slug:slug>/label-studio/connection/",
        ls_api.ConnectionApi.as_view(),
        name="labelstudio-connection",
    ),
    path(
        "projects/<slug:slug>/label-studio/test/",
        ls_api.ConnectionTestApi.as_view(),
        name="labelstudio-test",
    ),
    path(
        "projects/<slug:slug>/label-studio/push/", ls_api.PushApi.as_view(), name="labelstudio-push"
    ),
    path(
        "projects/<slug:slug>/label-studio/pull/", ls_api.PullApi.as_view(), name="labelstudio-pull"
    ),
    path(
        "projects/<slug:slug>/label-studio/import/",
        ls_api.FileImportApi.as_view(),
        name="labelstudio-import",
    ),
    path(
        "projects/<slug:slug>/label-studio/jobs/",
        ls_api.JobListApi.as_view(),
        name="labelstudio-jobs",
    ),
    path(
        "projects/<slug:slug>/label-studio/jobs/<int:job_id>/",
        ls_api.JobDetailApi.as_view(),
        name="labelstudio-job",
    ),
    path(
        "projects/<slug:slug>/label-studio/webhook/",
        ls_api.WebhookApi.as_view(),
        name="labelstudio-webhook",
    ),
    # ---- end label studio api ----
    # ---- end api ----
]

__all__ = ["api", "api_monitoring", "ls_api", "ls_views", "monitoring", "quality", "review"]
