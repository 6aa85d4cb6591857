from django.contrib import admin

from feedback.models import (
    AlertWebhook,
    AuditEvent,
    DriftAlert,
    GoldAnswer,
    ItemOutcome,
    Review,
    ReviewRevision,
)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Decisions are written through services (revisions, audit); the admin only reads."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class RevisionInline(admin.TabularInline):
    model = ReviewRevision
    extra = 0
    fields = ["number", "editor", "changed", "data", "created_at"]
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Review)
class ReviewAdmin(ReadOnlyAdmin):
    list_display = ["id", "project", "item", "expert", "verdict", "revision", "created_at"]
    list_filter = ["verdict", "project"]
    search_fields = ["item__external_id", "expert__username"]
    raw_id_fields = ["item", "candidate", "preferred_candidate"]
    inlines = [RevisionInline]


@admin.register(ItemOutcome)
class ItemOutcomeAdmin(ReadOnlyAdmin):
    list_display = ["item", "project", "outcome", "source", "agreement", "decided_by", "decided_at"]
    list_filter = ["outcome", "source", "project"]


@admin.register(GoldAnswer)
class GoldAnswerAdmin(ReadOnlyAdmin):
    list_display = ["item", "project", "verdict", "created_by", "updated_at"]


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "project", "actor", "action", "item", "review"]
    list_filter = ["action", "project"]


@admin.register(DriftAlert)
class DriftAlertAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "project", "model", "metric", "delivered_at", "delivery_error"]
    list_filter = ["metric", "project"]


@admin.register(AlertWebhook)
class AlertWebhookAdmin(ReadOnlyAdmin):
    """Set on the project's monitoring page, which generates the secret; never shown here."""

    list_display = ["project", "url"]
    exclude = ["secret"]
