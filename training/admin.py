from django.contrib import admin

from training.models import Adapter, BaseModel, DatasetVersion, TrainingRun
from training.services import dataset_version_delete


@admin.register(DatasetVersion)
class DatasetVersionAdmin(admin.ModelAdmin):
    """Versions are made by builds and never edited; an admin may delete one (its files go
    with it)."""

    list_display = [
        "id",
        "project",
        "status",
        "kinds",
        "rows_total",
        "short_sha",
        "created_by",
        "created_at",
    ]
    list_filter = ["status", "project"]
    search_fields = ["content_sha256", "fingerprint"]
    readonly_fields = [f.name for f in DatasetVersion._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return request.user.is_superuser

    def delete_model(self, request, obj):
        dataset_version_delete(version=obj)

    def delete_queryset(self, request, queryset):
        for version in queryset:
            dataset_version_delete(version=version)


@admin.register(BaseModel)
class BaseModelAdmin(admin.ModelAdmin):
    list_display = ["name", "reference", "revision", "builtin", "parameters", "created_at"]
    search_fields = ["name", "reference"]
    readonly_fields = ["builtin", "parameters", "created_at"]


@admin.register(TrainingRun)
class TrainingRunAdmin(admin.ModelAdmin):
    """Runs are launched through the services (validation, queueing); the admin reads them."""

    list_display = ["id", "method", "status", "dataset_version", "base_model", "created_by"]
    list_filter = ["status", "method"]
    readonly_fields = [f.name for f in TrainingRun._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Adapter)
class AdapterAdmin(admin.ModelAdmin):
    list_display = ["id", "run", "created_at"]
    readonly_fields = [f.name for f in Adapter._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
