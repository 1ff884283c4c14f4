"""Site-wide views: health check and the error handlers (JSON under /api/, pages elsewhere).

The browser pages live in `portal.web`."""

from __future__ import annotations

from django.contrib.staticfiles import finders
from django.db import connection
from django.http import FileResponse, Http404, JsonResponse
from django.views import defaults
from django.views.decorators.cache import cache_control
from django.views.decorators.http import require_GET


@require_GET
def healthz(request):
    """Liveness/readiness: the database answers."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})


@require_GET
@cache_control(public=True, max_age=7 * 24 * 3600)
def favicon(request):
    """/favicon.ico: the portal's icon (static/portal/favicon.ico), so that no page logs a 404 for it."""
    path = finders.find("portal/favicon.ico")
    if not path:
        raise Http404("no favicon")
    return FileResponse(open(path, "rb"), content_type="image/x-icon")  # noqa: SIM115 - FileResponse closes it


def _api_error(code: str, message: str, status: int) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message}}, status=status)


def not_found(request, exception=None):
    """handler404: the API's one JSON error shape under /api/, the usual page elsewhere."""
    if request.path.startswith("/api/"):
        return _api_error("not_found", "no such endpoint or object", 404)
    return defaults.page_not_found(request, exception)


def server_error(request):
    """handler500: a JSON error under /api/ (clients parse it), the usual page elsewhere."""
    if request.path.startswith("/api/"):
        return _api_error("server_error", "internal error; it has been logged", 500)
    return defaults.server_error(request)


def bad_request(request, exception=None):
    if request.path.startswith("/api/"):
        return _api_error("bad_request", "bad request", 400)
    return defaults.bad_request(request, exception)


def permission_denied(request, exception=None):
    if request.path.startswith("/api/"):
        return _api_error("forbidden", str(exception or "") or "forbidden", 403)
    return defaults.permission_denied(request, exception)
