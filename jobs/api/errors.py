"""One JSON error shape for the whole API: {"error": {"code", "message", "fields"?, "status"?}}."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_handler

from jobs import services, states


def error_response(code: str, message: str, http_status: int, **extra) -> Response:
    return Response({"error": {"code": code, "message": message, **extra}}, status=http_status)


def _flatten(detail, prefix: str = "") -> dict[str, str]:
    if isinstance(detail, dict):
        out: dict[str, str] = {}
        for key, value in detail.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            out.update(_flatten(value, path))
        return out
    if isinstance(detail, list):
        if all(not isinstance(d, dict | list) for d in detail):
            return {prefix or "non_field_errors": " ".join(str(d) for d in detail)}
        out = {}
        for i, value in enumerate(detail):
            out.update(_flatten(value, f"{prefix}.{i}" if prefix else str(i)))
        return out
    return {prefix or "non_field_errors": str(detail)}


def exception_handler(exc, context):
    if isinstance(exc, services.InvalidInput):
        first = next(iter(exc.fields.items()))
        code = "forbidden" if exc.status == 403 else "invalid"
        return error_response(code, f"{first[0]}: {first[1]}", exc.status, fields=exc.fields)
    if isinstance(exc, states.Conflict):
        return error_response("conflict", exc.message, status.HTTP_409_CONFLICT, status=exc.status)
    if isinstance(exc, services.NotFound | Http404):
        return error_response("not_found", str(exc) or "not found", status.HTTP_404_NOT_FOUND)
    if isinstance(exc, services.QuotaExceeded):
        return error_response("quota_exceeded", str(exc), status.HTTP_429_TOO_MANY_REQUESTS)
    if isinstance(exc, services.TooLarge):
        return error_response("too_large", str(exc), status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
    if isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or None)
    response = drf_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        fields = _flatten(exc.detail)
        first = next(iter(fields.items()), ("request", "invalid"))
        response.data = {"error": {"code": "invalid", "message": f"{first[0]}: {first[1]}", "fields": fields}}
    else:
        detail = getattr(exc, "detail", str(exc))
        code = getattr(detail, "code", None) or getattr(exc, "default_code", "error")
        if isinstance(exc, exceptions.ParseError):
            code = "malformed"
        response.data = {"error": {"code": code, "message": str(detail)}}
    return response
