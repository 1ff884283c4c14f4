"""The worker API (docs/worker-api.md): enroll, heartbeat, claim, attempt calls, and signed transfers.

Workers authenticate with `Authorization: Worker <token>`; attempt calls also carry `X-Fencing-Token`.
A worker reaches only its own attempts (403 otherwise) and only job-scoped, short-lived file URLs.
"""

from __future__ import annotations

from django.conf import settings
from django.core import signing
from django.core.files.storage import default_storage
from django.http import FileResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import extend_schema
from rest_framework import authentication, exceptions, permissions, status
from rest_framework.response import Response
from rest_framework.views import APIView

from jobs import services, states, storage
from jobs.api.parsers import WorkerJSONParser
from jobs.api.worker_contract import (
    AttemptHeartbeatRequest,
    ClaimNextRequest,
    CompleteRequest,
    EnrollRequest,
    HeartbeatRequest,
    LogRequest,
    OutputRequest,
    validated,
)
from jobs.models import Attempt, Worker, WorkerToken, hash_token


class WorkerTokenAuthentication(authentication.TokenAuthentication):
    keyword = "Worker"

    def authenticate_credentials(self, key: str):
        token = (WorkerToken.objects.select_related("worker")
                 .filter(key_hash=hash_token(key), revoked_at__isnull=True).first())
        if token is None or not token.worker.enabled:
            raise exceptions.AuthenticationFailed("invalid or revoked worker token")
        return token.worker, token


class IsWorker(permissions.BasePermission):
    def has_permission(self, request, view) -> bool:
        return isinstance(request.user, Worker)


class WorkerView(APIView):
    authentication_classes = [WorkerTokenAuthentication]
    permission_classes = [IsWorker]
    parser_classes = [WorkerJSONParser]

    def attempt(self, request, attempt_id) -> Attempt:
        """The attempt named in the URL, if it is this worker's; its fencing token is checked by the state."""
        attempt = Attempt.objects.select_related("job", "worker").filter(
            pk=services.parse_uuid(attempt_id)).first()
        if attempt is None:
            raise services.NotFound("no such attempt")
        if attempt.worker_id != request.user.pk:
            raise exceptions.PermissionDenied("this attempt belongs to another worker")
        return attempt

    @staticmethod
    def fencing(request) -> str:
        token = request.headers.get("X-Fencing-Token", "")
        if not token:
            raise services.InvalidInput({"X-Fencing-Token": "header required"})
        return token


class EnrollView(APIView):
    authentication_classes: list = []
    permission_classes = [permissions.AllowAny]
    parser_classes = [WorkerJSONParser]

    @extend_schema(request=EnrollRequest, responses={201: {"type": "object"}})
    def post(self, request):
        data = validated(EnrollRequest, request.data)
        worker, token = services.enroll(data["enrollment_token"], data.get("name", ""),
                                        data.get("capabilities") or {})
        return Response({"worker_id": str(worker.pk), "token": token, "queues": services.worker_queues(worker)},
                        status=status.HTTP_201_CREATED)


class HeartbeatView(WorkerView):
    @extend_schema(request=HeartbeatRequest, responses={200: {"type": "object"}})
    def post(self, request):
        data = validated(HeartbeatRequest, request.data)
        worker = services.worker_heartbeat(request.user, data.get("capabilities"))
        return Response({"worker_id": str(worker.pk), "queues": services.worker_queues(worker),
                         "server_time": timezone.now().isoformat()})


class ClaimView(WorkerView):
    @extend_schema(request=None, responses={200: {"type": "object"}})
    def post(self, request, job_id):
        attempt = services.claim(job_id, request.user)
        return Response(services.claim_payload(attempt))


class ClaimNextView(WorkerView):
    @extend_schema(request=ClaimNextRequest, responses={200: {"type": "object"}})
    def post(self, request):
        data = validated(ClaimNextRequest, request.data or {})
        attempt = services.claim_next(request.user, data["wait_s"])
        if attempt is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(services.claim_payload(attempt))


class AttemptHeartbeatView(WorkerView):
    @extend_schema(request=AttemptHeartbeatRequest, responses={200: {"type": "object"}})
    def post(self, request, attempt_id):
        attempt = self.attempt(request, attempt_id)
        data = validated(AttemptHeartbeatRequest, request.data or {})
        directive, attempt = states.heartbeat(attempt.pk, self.fencing(request), data.get("progress"))
        services.worker_heartbeat(request.user, None)
        return Response({"directive": directive, "lease_expires_at": attempt.lease_expires_at.isoformat(),
                         "lease_s": settings.LOCUS_LEASE_SECONDS})


class AttemptLogView(WorkerView):
    @extend_schema(request=LogRequest, responses={200: {"type": "object"}})
    def post(self, request, attempt_id):
        attempt = states.check_fencing(self.attempt(request, attempt_id).pk, self.fencing(request))
        data = validated(LogRequest, request.data)
        return Response({"offset": services.append_log(attempt, data["text"])})


class AttemptOutputView(WorkerView):
    @extend_schema(request=OutputRequest, responses={201: {"type": "object"}})
    def post(self, request, attempt_id):
        attempt = states.check_fencing(self.attempt(request, attempt_id).pk, self.fencing(request))
        data = validated(OutputRequest, request.data)
        target = services.output_upload_target(attempt, data["name"], data["size"], data["sha256"])
        return Response(target, status=status.HTTP_201_CREATED)


class AttemptCompleteView(WorkerView):
    @extend_schema(request=CompleteRequest, responses={200: {"type": "object"}})
    def post(self, request, attempt_id):
        attempt = states.check_fencing(self.attempt(request, attempt_id).pk, self.fencing(request))
        data = validated(CompleteRequest, request.data)
        job = services.complete(attempt, self.fencing(request), data)
        return Response({"job_status": job.status})


def _transfer_error(code: str, message: str, http_status: int) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message}}, status=http_status)


@csrf_exempt
def transfer(request, token: str):
    """Local storage only: a signed, short-lived GET of one input or PUT of one output of a live attempt."""
    try:
        scope = storage.unsign(token)
    except signing.SignatureExpired:
        return _transfer_error("expired", "this transfer URL has expired", 403)
    except signing.BadSignature:
        return _transfer_error("forbidden", "invalid transfer URL", 403)
    attempt = Attempt.objects.filter(pk=scope.get("attempt"), job_id=scope.get("job")).first()
    if attempt is None or attempt.status != Attempt.Status.RUNNING:
        return _transfer_error("conflict", "the attempt this URL was made for is over", 409)
    if scope["op"] == "get" and request.method == "GET":
        if not attempt.job.inputs.filter(pk=scope.get("file"), key=scope["key"]).exists():
            return _transfer_error("forbidden", "not an input of this job", 403)
        return FileResponse(default_storage.open(scope["key"], "rb"), content_type="application/octet-stream")
    if scope["op"] == "put" and request.method == "PUT":
        key = scope["key"]
        if default_storage.exists(key):
            default_storage.delete(key)  # a retried upload within the same attempt replaces its bytes
        try:
            saved, size, sha = storage.save_stream(key, request, limit=scope["size"])
        except storage.TooLarge:
            storage.delete(key)
            return _transfer_error("too_large", f"more than the announced {scope['size']} bytes", 413)
        if saved != key or size != scope["size"] or sha != scope["sha256"]:
            storage.delete(saved)
            return _transfer_error("invalid", f"received {size} bytes with sha256 {sha}; expected "
                                   f"{scope['size']} bytes with sha256 {scope['sha256']}", 400)
        return JsonResponse({"key": key, "size": size, "sha256": sha}, status=201)
    return _transfer_error("method_not_allowed", f"{request.method} is not allowed on this URL", 405)

