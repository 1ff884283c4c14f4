"""Requests refused before any view runs, in the API's JSON error shape under /api/.

- A query string with a NUL or another character no database column can hold (PostgreSQL refuses NUL in
  text, so `?application=%00` reached the database and answered 500): 400 naming the parameter.
- A JSON body over DATA_UPLOAD_MAX_MEMORY_SIZE: 413 with the limit, instead of Django's HTML error page.
  File uploads (multipart, raw chunks) have their own limits and are not concerned.
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpResponse, JsonResponse

from jobs.textsafe import clean_text


def _refuse(request, code: str, message: str, status: int) -> HttpResponse:
    if request.path.startswith("/api/"):
        return JsonResponse({"error": {"code": code, "message": message}}, status=status)
    return HttpResponse(message, status=status, content_type="text/plain; charset=utf-8")


def _bad_parameter(request) -> str | None:
    for key, values in request.GET.lists():
        for text in (key, *values):
            if clean_text(text) != text or any(ord(ch) < 32 and ch not in "\t\n\r" for ch in text):
                return key
    return None


class RequestChecks:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        bad = _bad_parameter(request)
        if bad is not None:
            return _refuse(request, "invalid", f"query parameter {clean_text(bad)[:50]!r}: control characters "
                                               "are not allowed", 400)
        content_type = request.META.get("CONTENT_TYPE", "")
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if limit is not None and length > limit and content_type.startswith("application/json"):
            return _refuse(request, "too_large", f"the request body is {length} bytes; at most {limit} bytes "
                                                 "of JSON are accepted", 413)
        return self.get_response(request)
