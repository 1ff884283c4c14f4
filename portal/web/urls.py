"""URLs of the browser portal (included at the root by portal/urls.py)."""

from django.urls import path

from portal.web import accounts, datasets, jobs, models_pages, workers

urlpatterns = [
    path("", jobs.job_list, name="home"),
    path("jobs/live/", jobs.job_list_live, name="jobs-live"),
    path("jobs/new/", jobs.job_new, name="job-new"),
    path("jobs/<uuid:job_id>/", jobs.job_page, name="job-page"),
    path("jobs/<uuid:job_id>/live/", jobs.job_live, name="job-page-live"),
    path("jobs/<uuid:job_id>/cancel/", jobs.job_cancel, name="job-page-cancel"),
    path("jobs/<uuid:job_id>/rerun/", jobs.job_rerun, name="job-page-rerun"),
    path("jobs/<uuid:job_id>/log.txt", jobs.job_log, name="job-page-log"),
    path("files/<uuid:file_id>/", jobs.file_page, name="file-page"),
    path("models/", models_pages.model_list, name="models"),
    path("models/<uuid:model_id>/share/", models_pages.model_share, name="model-share"),
    path("models/<uuid:model_id>/delete/", models_pages.model_delete, name="model-delete"),
    path("datasets/", datasets.dataset_list, name="datasets"),
    path("datasets/<uuid:dataset_id>/", datasets.dataset_page, name="dataset-page"),
    path("datasets/<uuid:dataset_id>/delete/", datasets.dataset_delete, name="dataset-delete"),
    path("accounts/signup/", accounts.signup, name="signup"),
    path("account/", accounts.profile, name="profile"),
    path("account/tokens/", accounts.tokens, name="tokens"),
    path("account/tokens/<int:pk>/revoke/", accounts.token_revoke, name="token-revoke"),
    path("institutions/", accounts.institutions, name="institutions"),
    path("institutions/<slug:slug>/", accounts.institution_page, name="institution-page"),
    path("institutions/<slug:slug>/members/<int:user_id>/", accounts.institution_member, name="institution-member"),
    path("manage/accounts/", accounts.approvals, name="approvals"),
    path("manage/accounts/<int:user_id>/", accounts.approval_decide, name="approval-decide"),
    path("workers/", workers.worker_list, name="workers"),
    path("workers/enrollment-tokens/", workers.create_enrollment_token, name="worker-token-page"),
    path("workers/<uuid:pk>/revoke/", workers.revoke, name="worker-revoke-page"),
    path("usage/", workers.usage_page, name="usage-page"),
]
