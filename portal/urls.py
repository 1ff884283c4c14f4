"""Root URLs: the browser UI, the API under /api/v1/, its schema and docs, the admin."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView
from rest_framework.routers import DefaultRouter

from jobs.api.urls import urlpatterns as api_urls
from portal import views
from portal.accounts.api import ApiTokenViewSet

tokens = DefaultRouter()
tokens.register("tokens", ApiTokenViewSet, basename="token")

urlpatterns = [
    path("", views.home, name="home"),
    path("jobs/<uuid:job_id>/", views.job_detail, name="job-detail"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("api/v1/", include(api_urls)),
    path("api/v1/", include(tokens.urls)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularRedocView.as_view(url_name="schema"), name="api-docs"),
    path("healthz", views.healthz, name="healthz"),
    path("admin/", admin.site.urls),
]
