"""Root URLs: the browser UI, the API under /api/v1/, its schema and docs, the admin."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView
from rest_framework.routers import SimpleRouter

from jobs.api.urls import urlpatterns as api_urls
from portal import views
from portal.accounts.api import ApiTokenViewSet
from portal.accounts.forms import LoginForm
from portal.accounts.views import ThrottledLoginView
from portal.csp import allow

tokens = SimpleRouter()  # no API root of its own: /api/v1/ already has one
tokens.register("tokens", ApiTokenViewSet, basename="token")

urlpatterns = [
    path("", include("portal.web.urls")),
    path("accounts/login/", ThrottledLoginView.as_view(authentication_form=LoginForm), name="login"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("api/v1/", include(api_urls)),
    path("api/v1/", include(tokens.urls)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # Redoc (from /static/) writes its styles into <style> elements and style attributes, and runs its search
    # index in a worker made from a blob: URL; its scripts still come from the portal only.
    path("api/docs/", allow(style_src="'unsafe-inline'", worker_src="blob:")(
        SpectacularRedocView.as_view(url_name="schema")), name="api-docs"),
    path("healthz", views.healthz, name="healthz"),
    path("favicon.ico", views.favicon, name="favicon"),  # asked for by browsers on pages without <link rel=icon>
    path("admin/", admin.site.urls),
]

handler400 = views.bad_request
handler403 = views.permission_denied
handler404 = views.not_found
handler500 = views.server_error
