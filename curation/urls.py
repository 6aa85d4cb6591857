from django.urls import path

from curation import api, views

app_name = "curation"

urlpatterns = [
    path("", views.project_list, name="project_list"),
    path("<slug:slug>/", views.project_detail, name="project_detail"),
    path("<slug:slug>/members/", views.project_member_add, name="project_member_add"),
]

api_urlpatterns = [
    path("projects/", api.ProjectListCreateApi.as_view(), name="project-list"),
    path("projects/<slug:slug>/", api.ProjectDetailApi.as_view(), name="project-detail"),
    path("projects/<slug:slug>/members/", api.ProjectMembersApi.as_view(), name="project-members"),
]
