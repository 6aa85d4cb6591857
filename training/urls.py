"""Training routes. Pages hang under /projects/<slug>/datasets/ (namespace ``training``);
API routes join /api/v1/ (namespace ``api``)."""

from django.urls import path

from training import api, views

app_name = "training"

urlpatterns = [
    path("<slug:slug>/datasets/", views.dataset_list, name="dataset_list"),
    path("<slug:slug>/datasets/count/", views.selection_count, name="selection_count"),
    path("<slug:slug>/datasets/<int:version_id>/", views.version_detail, name="version_detail"),
    path(
        "<slug:slug>/datasets/<int:version_id>/status/",
        views.version_status,
        name="version_status",
    ),
    path(
        "<slug:slug>/datasets/<int:version_id>/compare/",
        views.version_compare,
        name="version_compare",
    ),
    path(
        "<slug:slug>/datasets/<int:version_id>/download.zip",
        views.version_archive,
        name="version_archive",
    ),
    path(
        "<slug:slug>/datasets/<int:version_id>/files/<str:name>",
        views.version_file,
        name="version_file",
    ),
]

api_urlpatterns = [
    path("projects/<slug:slug>/datasets/", api.ProjectDatasetsApi.as_view(), name="dataset-list"),
    path("datasets/<int:version_id>/", api.DatasetDetailApi.as_view(), name="dataset-detail"),
    path(
        "datasets/<int:version_id>/files/<str:name>",
        api.DatasetFileApi.as_view(),
        name="dataset-file",
    ),
]

# Training runs, adapters and base models (training/api_runs.py).
from training import api_runs  # noqa: E402

api_urlpatterns += [
    path("training-runs/", api_runs.TrainingRunsApi.as_view(), name="training-run-list"),
    path(
        "training-runs/<int:run_id>/",
        api_runs.TrainingRunDetailApi.as_view(),
        name="training-run-detail",
    ),
    path(
        "training-runs/<int:run_id>/cancel/",
        api_runs.TrainingRunCancelApi.as_view(),
        name="training-run-cancel",
    ),
    path("adapters/<int:adapter_id>/", api_runs.AdapterDetailApi.as_view(), name="adapter-detail"),
    path("base-models/", api_runs.BaseModelsApi.as_view(), name="base-model-list"),
]

# Training-run pages (training/views_runs.py).
from training import views_runs  # noqa: E402

urlpatterns += [
    path("<slug:slug>/runs/<int:run_id>/", views_runs.run_detail, name="run_detail"),
    path("<slug:slug>/runs/<int:run_id>/cancel/", views_runs.run_cancel, name="run_cancel"),
]

# Launching runs and the adapter registry (training/views_runs.py).
urlpatterns += [
    path(
        "<slug:slug>/datasets/<int:version_id>/train/",
        views_runs.run_launch,
        name="run_launch",
    ),
    path("<slug:slug>/adapters/", views_runs.adapter_list, name="adapter_list"),
    path(
        "<slug:slug>/adapters/<int:adapter_id>/download.zip",
        views_runs.adapter_download,
        name="adapter_download",
    ),
]
