from django.contrib import admin

from curation.models import Membership, ProductionOutput, Project


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "created_by", "created_at"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    readonly_fields = ["created_by", "created_at", "updated_at"]
    inlines = [MembershipInline]

    def save_model(self, request, obj, form, change):
        if not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["project", "user", "role", "created_at"]
    list_filter = ["role", "project"]
    search_fields = ["user__username", "project__name"]
    autocomplete_fields = ["user", "project"]


@admin.register(ProductionOutput)
class ProductionOutputAdmin(admin.ModelAdmin):
    """Read-only: records arrive through the ingestion API and are kept as sent."""

    list_display = [
        "project",
        "client_id",
        "model",
        "adapter",
        "confidence",
        "sampled",
        "received_at",
    ]
    list_filter = ["project", "sampled"]
    search_fields = ["client_id", "model"]
    raw_id_fields = ["item"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
