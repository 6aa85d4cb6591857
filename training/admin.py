import json

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.http import Http404
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse

from training.forms import AdminTrainForm
from training.ml.config import SettingsError, defaults_for
from training.models import (
    Adapter,
    BaseModel,
    DatasetVersion,
    EvaluationRound,
    GenerationJob,
    GenerationTarget,
    Promotion,
    RetrainingCycle,
    RetrainingPolicy,
    TrainingRun,
)
from training.services import dataset_version_delete
from training.services import runs as services_runs


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

    actions = ["train_adapter"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return request.user.is_superuser

    # "Train adapter…": an action on one selected version that opens an intermediate page
    # (``train_adapter_view``) with the launch form; the run is made by the same service as
    # the web form, the API and ``train_adapter``.

    def get_urls(self):
        urls = [
            path(
                "<int:version_id>/train/",
                self.admin_site.admin_view(self.train_adapter_view),
                name="training_datasetversion_train",
            )
        ]
        return urls + super().get_urls()

    @admin.action(description="Train adapter…")
    def train_adapter(self, request, queryset):
        if not request.user.is_staff:  # the admin site lets only staff in; say it anyway
            raise PermissionDenied("Only admins may launch training runs.")
        ids = list(queryset.values_list("pk", flat=True)[:2])
        if len(ids) != 1:
            self.message_user(
                request,
                "Train adapter… works on one dataset version at a time: select exactly one "
                f"(you selected {queryset.count()}).",
                messages.ERROR,
            )
            return None
        return redirect("admin:training_datasetversion_train", version_id=ids[0])

    def train_adapter_view(self, request, version_id: int):
        """GET: the form, prefilled with the defaults for the first method and model. POST
        with ``_defaults``: the form again with the config refilled for the chosen method and
        model. POST: ``training_run_create`` (created_via "admin") and a redirect to the run's
        page, or the form again (400) with the service's errors under the fields they name."""
        if not request.user.is_staff:
            raise PermissionDenied("Only admins may launch training runs.")
        version = DatasetVersion.objects.select_related("project").filter(pk=version_id).first()
        if version is None:
            raise Http404("No such dataset version.")
        if not self.has_view_permission(request, version):
            raise PermissionDenied("You may not see dataset versions.")
        from training.views.runs import version_methods

        methods = version_methods(version)
        changelist = reverse("admin:training_datasetversion_changelist")
        problem = None
        if not methods:
            problem = (
                f"Dataset version {version.pk} has nothing to train on: it is not built, or it "
                "has no sft or preference rows in its train split."
            )
        elif not BaseModel.objects.exists():
            problem = (
                "No base model is registered: run `python manage.py prepare_models` or add one "
                "under Base models."
            )
        if problem:
            self.message_user(request, problem, messages.ERROR)
            return redirect(changelist)

        status = 200
        if request.method == "POST" and "_defaults" not in request.POST:
            form = AdminTrainForm(request.POST, methods=methods)
            if form.is_valid():
                try:
                    run = services_runs.training_run_create(
                        user=request.user,
                        dataset_version=version,
                        base_model=form.cleaned_data["base_model"],
                        method=form.cleaned_data["method"],
                        config=form.cleaned_data["config"],
                        via="admin",
                    )
                except ValidationError as exc:
                    form.add_service_errors(exc.message_dict)
                except SettingsError as exc:
                    form.add_service_errors({f"config.{exc.field}": [str(exc)]})
                else:
                    self.message_user(
                        request,
                        f"Run {run.pk} is queued: {run.method} on {run.base_model.name}, "
                        f"dataset version {version.pk}.",
                        messages.SUCCESS,
                    )
                    return redirect("training:run_detail", slug=version.project.slug, run_id=run.pk)
            status = 400
        else:
            form = AdminTrainForm(
                initial=self._train_initial(request.POST, methods), methods=methods
            )
        context = {
            **self.admin_site.each_context(request),
            "title": f"Train an adapter on dataset version {version.pk}",
            "opts": self.model._meta,
            "version": version,
            "form": form,
            "changelist_url": changelist,
        }
        return TemplateResponse(
            request, "training/admin/train_adapter.html", context, status=status
        )

    @staticmethod
    def _train_initial(data, methods) -> dict:
        """The chosen (or first) model and method, and the config JSON of their defaults."""
        method = data.get("method") if data.get("method") in dict(methods) else methods[0][0]
        model = None
        if str(data.get("base_model", "")).isdigit():
            model = BaseModel.objects.filter(pk=int(data["base_model"])).first()
        model = model or BaseModel.objects.first()
        defaults = defaults_for(method, model.parameters).to_dict()
        return {
            "base_model": model.pk,
            "method": method,
            "config": json.dumps(defaults, indent=2),
        }

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


# ---- The loop: generation jobs, evaluation rounds, promotions, retraining ------------------------
# These rows are history (what ran, what experts judged, who promoted what and why): the admin
# shows them and changes nothing. They are made and moved by the services, which keep their
# invariants (blind items, frozen pass rules, one cycle in flight, the promotion history).


class _HistoryAdmin(admin.ModelAdmin):
    """Read-only: no add, no change, no delete."""

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields]

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class GenerationTargetInline(admin.TabularInline):
    model = GenerationTarget
    fields = ["position", "tag", "base_model", "adapter"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(GenerationJob)
class GenerationJobAdmin(_HistoryAdmin):
    list_display = [
        "id",
        "project",
        "purpose",
        "source",
        "status",
        "done",
        "total",
        "tokens_per_s",
        "created_by",
        "created_at",
    ]
    list_filter = ["status", "purpose", "source", "project"]
    list_select_related = ["project", "created_by"]
    search_fields = ["error", "task_id"]
    inlines = [GenerationTargetInline]


@admin.register(EvaluationRound)
class EvaluationRoundAdmin(_HistoryAdmin):
    list_display = [
        "id",
        "project",
        "subject",
        "baseline",
        "status",
        "wins",
        "ties",
        "losses",
        "win_rate",
        "passed",
        "trigger",
        "created_at",
    ]
    list_filter = ["status", "passed", "trigger", "project"]
    list_select_related = ["project", "baseline_base_model"]

    @admin.display(description="baseline")
    def baseline(self, obj):
        if obj.baseline_adapter_id:
            return f"adapter {obj.baseline_adapter_id}"
        return obj.baseline_base_model.name if obj.baseline_base_model else "—"


@admin.register(Promotion)
class PromotionAdmin(_HistoryAdmin):
    list_display = [
        "id",
        "project",
        "adapter",
        "base_model",
        "evaluation_round",
        "override",
        "rollback_of",
        "promoted_by",
        "created_at",
    ]
    list_filter = ["override", "project"]
    list_select_related = ["project", "base_model", "promoted_by"]
    search_fields = ["reason"]


@admin.register(RetrainingCycle)
class RetrainingCycleAdmin(_HistoryAdmin):
    list_display = [
        "id",
        "project",
        "trigger",
        "status",
        "step",
        "dataset_version",
        "training_run",
        "evaluation_round",
        "approved_by",
        "created_at",
        "finished_at",
    ]
    list_filter = ["status", "trigger", "step", "project"]
    list_select_related = ["project", "approved_by"]
    search_fields = ["error"]


class _DryRun(Exception):
    """Rolls back a service call made only to check its input."""


class RetrainingPolicyForm(forms.ModelForm):
    """Checked by ``policy_update`` itself (run and rolled back), so the admin refuses what
    the Retraining page refuses, with the service's messages under the fields they name."""

    user = None  # set by RetrainingPolicyAdmin.get_form

    class Meta:
        model = RetrainingPolicy
        fields = ["project", "enabled", "min_new_decisions", "on_drift", "require_approval"]

    def clean(self):
        data = super().clean()
        project = data.get("project") or getattr(self.instance, "project", None)
        if self.errors or project is None:
            return data
        from training.services.policies import policy_update

        try:
            with transaction.atomic():
                policy_update(
                    project=project,
                    user=self.user,
                    enabled=data.get("enabled", False),
                    min_new_decisions=data.get("min_new_decisions"),
                    on_drift=data.get("on_drift", False),
                    require_approval=data.get("require_approval", False),
                )
                raise _DryRun
        except _DryRun:
            pass
        except ValidationError as exc:
            for field, errors in exc.message_dict.items():
                self.add_error(field if field in self.fields else None, errors)
        except PermissionDenied as exc:
            self.add_error(None, str(exc))
        return data


@admin.register(RetrainingPolicy)
class RetrainingPolicyAdmin(admin.ModelAdmin):
    """A project's policy, saved through ``policy_update`` (its checks, the admin-only rule,
    ``updated_by``), as on the Retraining page. The project is fixed once the policy exists;
    deleting is refused (turn the policy off instead)."""

    form = RetrainingPolicyForm
    list_display = [
        "project",
        "enabled",
        "min_new_decisions",
        "on_drift",
        "require_approval",
        "updated_by",
        "updated_at",
    ]
    list_filter = ["enabled", "on_drift", "require_approval"]
    list_select_related = ["project", "updated_by"]

    def get_readonly_fields(self, request, obj=None):
        return ["project", "updated_by", "updated_at"] if obj is not None else []

    def get_form(self, request, obj=None, **kwargs):
        form = super().get_form(request, obj, **kwargs)
        return type(form.__name__, (form,), {"user": request.user})

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        from training.services.policies import policy_update

        saved = policy_update(
            project=obj.project,
            user=request.user,
            enabled=obj.enabled,
            min_new_decisions=obj.min_new_decisions,
            on_drift=obj.on_drift,
            require_approval=obj.require_approval,
        )
        obj.pk = saved.pk
