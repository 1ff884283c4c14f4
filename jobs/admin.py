from django.contrib import admin, messages
from django.contrib.admin.models import LogEntry

from jobs import services, states
from jobs.models import (
    Attempt,
    Dataset,
    EnrollmentToken,
    File,
    Institution,
    Job,
    JobEvent,
    Membership,
    Upload,
    Worker,
)


class JobEventInline(admin.TabularInline):
    model = JobEvent
    extra = 0
    can_delete = False
    readonly_fields = ["created_at", "kind", "message", "attempt"]
    fields = readonly_fields

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ["id", "owner", "application", "entrypoint", "status", "queue", "attempt_count", "created_at"]
    list_filter = ["status", "application", "queue"]
    search_fields = ["id", "owner__username", "application", "entrypoint"]
    # Status is written by jobs.states only: the admin shows it but cannot change it.
    readonly_fields = [f.name for f in Job._meta.fields]
    inlines = [JobEventInline]
    actions = ["cancel_jobs", "requeue_jobs"]

    @admin.action(description="Cancel the selected jobs (queued or running)")
    def cancel_jobs(self, request, queryset):
        done = 0
        for job in queryset:
            try:
                states.cancel(job, by=request.user)
                states.event(job, "admin", f"cancelled by {request.user.get_username()}")
                done += 1
            except states.Conflict:
                continue
        self.message_user(request, f"{done} job(s) cancelled.", messages.SUCCESS)

    @admin.action(description="Requeue: submit the selected jobs again for their owners")
    def requeue_jobs(self, request, queryset):
        done, failed = 0, []
        for job in queryset:
            try:
                new, _ = services.submit(job.owner, application=job.application, version=job.version,
                                         entrypoint=job.entrypoint, params=job.params,
                                         inputs=services.picked_inputs(job.spec),
                                         notify=job.notify)
            except (services.InvalidInput, services.QuotaExceeded) as exc:
                failed.append(f"{job.pk}: {exc}")
                continue
            states.event(new, "admin", f"requeued by {request.user.get_username()} from job {job.pk}")
            done += 1
        self.message_user(request, f"{done} job(s) submitted again.", messages.SUCCESS)
        for line in failed:
            self.message_user(request, line, messages.ERROR)


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 1
    autocomplete_fields = ["user"]


@admin.register(Institution)
class InstitutionAdmin(admin.ModelAdmin):
    list_display = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [MembershipInline]


@admin.register(LogEntry)
class AuditTrailAdmin(admin.ModelAdmin):
    """Who changed what in the admin (Django's own log), read-only: the admin's audit trail."""

    list_display = ["action_time", "user", "content_type", "object_repr", "action_flag", "change_message"]
    list_filter = ["action_flag", "content_type"]
    search_fields = ["object_repr", "change_message", "user__username"]
    readonly_fields = [f.name for f in LogEntry._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


admin.site.register([Dataset, File, Worker, EnrollmentToken])
admin.site.register(Upload, list_display=["name", "owner", "dataset", "received", "size", "updated_at"])
admin.site.register(Attempt, list_display=["job", "number", "worker", "status", "lease_expires_at"])
admin.site.register(JobEvent, list_display=["job", "kind", "message", "created_at"], list_filter=["kind"])
