from django.urls import path

from curation.api import imports as imports_api
from curation.api import ingest as ingest_api
from curation.api import items as items_api
from curation.api import projects as projects_api
from curation.api import queue as queue_api
from curation.api import settings as settings_api
from curation.views import imports as imports_views
from curation.views import items as items_views
from curation.views import projects as projects_views
from curation.views import queue as queue_views
from curation.views import settings as settings_views

app_name = "curation"

urlpatterns = [
    path("", projects_views.project_list, name="project_list"),
    path("<slug:slug>/", projects_views.project_detail, name="project_detail"),
    path("<slug:slug>/members/", projects_views.project_member_add, name="project_member_add"),
    path("<slug:slug>/settings/", settings_views.project_settings, name="project_settings"),
    path("<slug:slug>/guidelines/", settings_views.project_guidelines, name="project_guidelines"),
    path("<slug:slug>/items/", items_views.item_list, name="item_list"),
    path("<slug:slug>/items/<int:item_id>/", items_views.item_detail, name="item_detail"),
    path("<slug:slug>/queue/", queue_views.queue_page, name="queue"),
    path("<slug:slug>/queue/start/", queue_views.queue_start, name="queue_start"),
    path("<slug:slug>/queue/release/", queue_views.queue_release, name="queue_release"),
    path("<slug:slug>/imports/", imports_views.import_page, name="import_page"),
    path("<slug:slug>/imports/<int:job_id>/", imports_views.import_detail, name="import_detail"),
    path(
        "<slug:slug>/imports/<int:job_id>/progress/",
        imports_views.import_progress,
        name="import_progress",
    ),
]

api_urlpatterns = [
    path("projects/", projects_api.ProjectListCreateApi.as_view(), name="project-list"),
    path("projects/<slug:slug>/", projects_api.ProjectDetailApi.as_view(), name="project-detail"),
    path(
        "projects/<slug:slug>/members/",
        projects_api.ProjectMembersApi.as_view(),
        name="project-members",
    ),
    path(
        "projects/<slug:slug>/settings/",
        settings_api.ProjectSettingsApi.as_view(),
        name="project-settings",
    ),
    path(
        "projects/<slug:slug>/guidelines/",
        settings_api.ProjectGuidelinesApi.as_view(),
        name="project-guidelines",
    ),
    path("projects/<slug:slug>/items/", items_api.ProjectItemListApi.as_view(), name="item-list"),
    path("items/<int:item_id>/", items_api.ItemDetailApi.as_view(), name="item-detail"),
    path(
        "projects/<slug:slug>/queue/claim/", queue_api.QueueClaimApi.as_view(), name="queue-claim"
    ),
    path("items/<int:item_id>/lease/renew/", queue_api.LeaseRenewApi.as_view(), name="lease-renew"),
    path(
        "items/<int:item_id>/lease/release/",
        queue_api.LeaseReleaseApi.as_view(),
        name="lease-release",
    ),
    path(
        "projects/<slug:slug>/imports/",
        imports_api.ProjectImportsApi.as_view(),
        name="project-imports",
    ),
    path("imports/<int:import_id>/", imports_api.ImportDetailApi.as_view(), name="import-detail"),
    path(
        "projects/<slug:slug>/outputs/",
        ingest_api.ProductionOutputsApi.as_view(),
        name="production-outputs",
    ),
]
