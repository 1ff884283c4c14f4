"""URLs of /api/v1/: one router for the user API, explicit paths for the worker API."""

from django.urls import path
from rest_framework.routers import DefaultRouter

from jobs.api import fleet, models_api, uploads, usage, user, worker

# No `.json` suffix routes: JSON is the only format, and @action methods do not take `format`.
router = DefaultRouter(trailing_slash=True)
router.include_format_suffixes = False
router.register("datasets", user.DatasetViewSet, basename="dataset")
router.register("files", user.FileViewSet, basename="file")
router.register("jobs", user.JobViewSet, basename="job")
router.register("uploads", uploads.UploadViewSet, basename="upload")
router.register("workers", fleet.WorkerViewSet, basename="worker")
router.register("enrollment-tokens", fleet.EnrollmentTokenViewSet, basename="enrollment-token")
router.register("models", models_api.TrainedModelViewSet, basename="trained-model")

worker_urls = [
    path("worker/enroll", worker.EnrollView.as_view(), name="worker-enroll"),
    path("worker/heartbeat", worker.HeartbeatView.as_view(), name="worker-heartbeat"),
    path("worker/claim-next", worker.ClaimNextView.as_view(), name="worker-claim-next"),
    path("worker/jobs/<str:job_id>/claim", worker.ClaimView.as_view(), name="worker-claim"),
    path("worker/attempts/<str:attempt_id>/heartbeat", worker.AttemptHeartbeatView.as_view(),
         name="worker-attempt-heartbeat"),
    path("worker/attempts/<str:attempt_id>/log", worker.AttemptLogView.as_view(), name="worker-attempt-log"),
    path("worker/attempts/<str:attempt_id>/outputs", worker.AttemptOutputView.as_view(),
         name="worker-attempt-outputs"),
    path("worker/attempts/<str:attempt_id>/complete", worker.AttemptCompleteView.as_view(),
         name="worker-attempt-complete"),
    path("worker/transfer/<str:token>", worker.transfer, name="transfer"),
]

urlpatterns = [
    path("applications/", user.ApplicationsView.as_view(), name="applications"),
    path("usage/", usage.UsageView.as_view(), name="usage"),
    *worker_urls,
    *router.urls,
]
