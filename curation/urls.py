from django.urls import path

from curation.api import projects as projects_api
from curation.views import projects as projects_views

app_name = "curation"

urlpatterns = [
    path("", projects_views.project_list, name="project_list"),
    path("<slug:slug>/", projects_views.project_detail, name="project_detail"),
    path("<slug:slug>/members/", projects_views.project_member_add, name="project_member_add"),
]

api_urlpatterns = [
    path("projects/", projects_api.ProjectListCreateApi.as_view(), name="project-list"),
    path("projects/<slug:slug>/", projects_api.ProjectDetailApi.as_view(), name="project-detail"),
    path(
        "projects/<slug:slug>/members/",
        projects_api.ProjectMembersApi.as_view(),
        name="project-members",
    ),
]
