"""Admin: approve pending accounts (same rule and email as the Approvals page), set notification defaults."""

from django.contrib import admin, messages

from portal.accounts import services
from portal.accounts.models import ApiToken, Profile


@admin.register(Profile)
class ProfileAdmin(admin.ModelAdmin):
    list_display = ["user", "pending", "requested_institution", "approved_at", "approved_by", "quota_bytes", "notify"]
    list_editable = ["quota_bytes"]
    list_filter = ["approved_at", "requested_institution"]
    search_fields = ["user__username", "user__email"]
    readonly_fields = ["approved_at", "approved_by"]
    actions = ["approve_accounts"]

    @admin.display(boolean=True, description="pending")
    def pending(self, obj):
        return obj.is_pending

    @admin.action(description="Approve the selected accounts (emails them)")
    def approve_accounts(self, request, queryset):
        done = sum(services.approve(request.user, p.user) for p in queryset.select_related("user") if p.is_pending)
        self.message_user(request, f"{done} account(s) approved.", messages.SUCCESS)


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "user", "prefix", "created_at", "last_used_at", "revoked_at"]
    readonly_fields = ["prefix", "key_hash", "created_at", "last_used_at"]
    search_fields = ["user__username", "name", "prefix"]
