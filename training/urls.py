"""Training routes. Pages hang under /projects/<slug>/ (namespace ``training``); API routes
join /api/v1/ (namespace ``api``)."""

from django.urls import path

from training.api import datasets as datasets_api
from training.api import generation as generation_api
from training.api import loop as loop_api
from training.api import runs as runs_api
from training.views import datasets as datasets_views
from training.views import generation as generation_views
from training.views import loop as loop_views
from training.views import runs as runs_views

app_name = "training"

urlpatterns = [
    # Dataset versions (training/views/datasets.py).
    path("<slug:slug>/datasets/", datasets_views.dataset_list, name="dataset_list"),
    path("<slug:slug>/datasets/count/", datasets_views.selection_count, name="selection_count"),
    path(
        "<slug:slug>/datasets/<int:version_id>/",
        datasets_views.version_detail,
        name="version_detail",
    ),
    path(
        "<slug:slug>/datasets/<int:version_id>/status/",
        datasets_views.version_status,
        name="version_status",
    ),
    path(
        "<slug:slug>/datasets/<int:version_id>/compare/",
        datasets_views.version_compare,
        name="version_compare",
    ),
    path(
        "<slug:slug>/datasets/<int:version_id>/download.zip",
        datasets_views.version_archive,
        name="version_archive",
    ),
    path(
        "<slug:slug>/datasets/<int:version_id>/files/<str:name>",
        datasets_views.version_file,
        name="version_file",
    ),
    # Training runs and the adapter registry (training/views/runs.py).
    path(
        "<slug:slug>/datasets/<int:version_id>/train/",
        runs_views.run_launch,
        name="run_launch",
    ),
    path("<slug:slug>/runs/<int:run_id>/", runs_views.run_detail, name="run_detail"),
    path("<slug:slug>/runs/<int:run_id>/cancel/", runs_views.run_cancel, name="run_cancel"),
    path("<slug:slug>/adapters/", runs_views.adapter_list, name="adapter_list"),
    path(
        "<slug:slug>/adapters/<int:adapter_id>/",
        runs_views.adapter_detail,
        name="adapter_detail",
    ),
    path(
        "<slug:slug>/adapters/<int:adapter_id>/rebase/",
        runs_views.adapter_rebase,
        name="adapter_rebase",
    ),
    path(
        "<slug:slug>/adapters/<int:adapter_id>/download.zip",
        runs_views.adapter_download,
        name="adapter_download",
    ),
    # Generation jobs and the adapter page's Try it panel (training/views/generation.py).
    path("<slug:slug>/generation/", generation_views.generation_list, name="generation_list"),
    path(
        "<slug:slug>/generation/<int:job_id>/",
        generation_views.generation_detail,
        name="generation_detail",
    ),
    path(
        "<slug:slug>/generation/<int:job_id>/cancel/",
        generation_views.generation_cancel,
        name="generation_cancel",
    ),
    path(
        "<slug:slug>/adapters/<int:adapter_id>/try-it/",
        generation_views.try_it_submit,
        name="try_it_submit",
    ),
    path(
        "<slug:slug>/adapters/<int:adapter_id>/try-it/<int:job_id>/",
        generation_views.try_it_result,
        name="try_it_result",
    ),
    # Closing the loop: evaluation rounds, models (promotion), retraining (views/loop.py).
    path("<slug:slug>/evaluations/", loop_views.evaluation_list, name="evaluations"),
    path(
        "<slug:slug>/evaluations/<int:round_id>/",
        loop_views.evaluation_detail,
        name="evaluation_detail",
    ),
    path(
        "<slug:slug>/evaluations/<int:round_id>/close/",
        loop_views.evaluation_close,
        name="evaluation_close",
    ),
    path("<slug:slug>/models/", loop_views.models_page, name="models"),
    path("<slug:slug>/models/promote/", loop_views.models_promote, name="models_promote"),
    path(
        "<slug:slug>/models/<int:promotion_id>/rollback/",
        loop_views.models_rollback,
        name="models_rollback",
    ),
    path("<slug:slug>/retraining/", loop_views.retraining_page, name="retraining"),
    path("<slug:slug>/retraining/policy/", loop_views.retraining_policy, name="retraining_policy"),
    path(
        "<slug:slug>/retraining/cycles/<int:cycle_id>/approve/",
        loop_views.retraining_cycle_action,
        {"action": "approve"},
        name="retraining_cycle_approve",
    ),
    path(
        "<slug:slug>/retraining/cycles/<int:cycle_id>/cancel/",
        loop_views.retraining_cycle_action,
        {"action": "cancel"},
        name="retraining_cycle_cancel",
    ),
]

api_urlpatterns = [
    path(
        "projects/<slug:slug>/datasets/",
        datasets_api.ProjectDatasetsApi.as_view(),
        name="dataset-list",
    ),
    path(
        "datasets/<int:version_id>/", datasets_api.DatasetDetailApi.as_view(), name="dataset-detail"
    ),
    path(
        "datasets/<int:version_id>/files/<str:name>",
        datasets_api.DatasetFileApi.as_view(),
        name="dataset-file",
    ),
    path("training-runs/", runs_api.TrainingRunsApi.as_view(), name="training-run-list"),
    path(
        "training-runs/<int:run_id>/",
        runs_api.TrainingRunDetailApi.as_view(),
        name="training-run-detail",
    ),
    path(
        "training-runs/<int:run_id>/cancel/",
        runs_api.TrainingRunCancelApi.as_view(),
        name="training-run-cancel",
    ),
    path("adapters/<int:adapter_id>/", runs_api.AdapterDetailApi.as_view(), name="adapter-detail"),
    path(
        "adapters/<int:adapter_id>/rebase/",
        runs_api.AdapterRebaseApi.as_view(),
        name="adapter-rebase",
    ),
    path("base-models/", runs_api.BaseModelsApi.as_view(), name="base-model-list"),
    # Generation jobs (training/api/generation.py).
    path(
        "projects/<slug:slug>/generation-jobs/",
        generation_api.ProjectGenerationJobsApi.as_view(),
        name="generation-job-list",
    ),
    path(
        "generation-jobs/<int:job_id>/",
        generation_api.GenerationJobDetailApi.as_view(),
        name="generation-job-detail",
    ),
    path(
        "generation-jobs/<int:job_id>/cancel/",
        generation_api.GenerationJobCancelApi.as_view(),
        name="generation-job-cancel",
    ),
    # Closing the loop (api/loop.py).
    path(
        "projects/<slug:slug>/evaluations/",
        loop_api.ProjectEvaluationsApi.as_view(),
        name="evaluation-list",
    ),
    path(
        "evaluations/<int:round_id>/",
        loop_api.EvaluationDetailApi.as_view(),
        name="evaluation-detail",
    ),
    path(
        "evaluations/<int:round_id>/close/",
        loop_api.EvaluationCloseApi.as_view(),
        name="evaluation-close",
    ),
    path(
        "projects/<slug:slug>/promotions/",
        loop_api.ProjectPromotionsApi.as_view(),
        name="promotion-list",
    ),
    path(
        "projects/<slug:slug>/promotions/<int:promotion_id>/rollback/",
        loop_api.PromotionRollbackApi.as_view(),
        name="promotion-rollback",
    ),
    path(
        "projects/<slug:slug>/current-model/",
        loop_api.CurrentModelApi.as_view(),
        name="current-model",
    ),
    path(
        "adapters/<int:adapter_id>/download/",
        loop_api.AdapterDownloadApi.as_view(),
        name="adapter-download",
    ),
    path(
        "projects/<slug:slug>/retraining-policy/",
        loop_api.RetrainingPolicyApi.as_view(),
        name="retraining-policy",
    ),
    path(
        "projects/<slug:slug>/retraining-cycles/",
        loop_api.RetrainingCyclesApi.as_view(),
        name="retraining-cycle-list",
    ),
    path(
        "projects/<slug:slug>/retraining-cycles/<int:cycle_id>/approve/",
        loop_api.RetrainingCycleActionApi.as_view(action="approve"),
        name="retraining-cycle-approve",
    ),
    path(
        "projects/<slug:slug>/retraining-cycles/<int:cycle_id>/cancel/",
        loop_api.RetrainingCycleActionApi.as_view(action="cancel"),
        name="retraining-cycle-cancel",
    ),
]
