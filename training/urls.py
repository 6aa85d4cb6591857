"""Training routes. Pages hang under /projects/<slug>/ (namespace ``training``); API routes
join /api/v1/ (namespace ``api``)."""

from django.urls import path

from training.api import datasets as datasets_api
from training.api import runs as runs_api
from training.views import datasets as datasets_views
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
        "<slug:slug>/adapters/<int:adapter_id>/download.zip",
        runs_views.adapter_download,
        name="adapter_download",
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
    path("base-models/", runs_api.BaseModelsApi.as_view(), name="base-model-list"),
]
