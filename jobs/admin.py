from django.contrib import admin

from jobs.models import Attempt, Dataset, EnrollmentToken, File, Institution, Job, JobEvent, Worker


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ["id", "owner", "application", "entrypoint", "status", "queue", "attempt_count", "created_at"]
    list_filter = ["status", "application", "queue"]
    # Status is written by jobs.states only: the admin shows it but cannot change it.
    readonly_fields = [f.name for f in Job._meta.fields]


admin.site.register([Dataset, File, Institution, Worker, EnrollmentToken])
admin.site.register(Attempt, list_display=["job", "number", "worker", "status", "lease_expires_at"])
admin.site.register(JobEvent, list_display=["job", "kind", "message", "created_at"])
