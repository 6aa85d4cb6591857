from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.authtoken.views import obtain_auth_token

from curation.urls import api_urlpatterns as curation_api
from feedback.urls import api_urlpatterns as feedback_api
from redline.lib.health import healthz
from training.urls import api_urlpatterns as training_api

api_v1 = [
    path("auth/token/", obtain_auth_token, name="auth-token"),
    *curation_api,
    *feedback_api,
    *training_api,
]

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="curation:project_list"), name="home"),
    path("healthz", healthz, name="healthz"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("projects/", include("curation.urls")),
    path("projects/", include("feedback.urls")),
    path("projects/", include("training.urls")),
    path("admin/", admin.site.urls),
    path("api/v1/", include((api_v1, "api"))),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="api-docs"),
]
