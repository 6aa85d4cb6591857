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
