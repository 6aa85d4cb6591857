"""Training-run pages: a run's live page (status, progress, ETA, loss chart, log tail,
Cancel) and its htmx partial. Managers and admins read; admins cancel; experts 403,
outsiders 404 (``get_run_for_user``). Thin: parse → access check → one service → render.
"""

from __future__ import annotations

import json
from pathlib import Path

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.utils.cache import patch_vary_headers
from django.views.decorators.http import require_GET, require_POST

from curation.models import Role
from curation.permissions import get_project_for_user, user_role
from redline.lib.zipstream import zip_stream
from training.forms import RebaseForm
from training.ml.config import SettingsError, defaults_for
from training.models import Adapter, BaseModel, DatasetStatus, TrainingMethod, TrainingRun
from training.permissions import (
    get_adapter_for_user,
    get_dataset_version_for_user,
    get_run_for_user,
)
from training.services import runs as services_runs

CHART_W, CHART_H = 480, 160


def loss_chart(history: list[dict]) -> dict | None:
    """Polyline points (numbers only) for the loss and eval-loss curves, scaled to the box."""
    steps = [
        (h["step"], h["loss"])
        for h in history
        if h.get("event") == "step" and h.get("loss") is not None
    ]
    evals = [
        (h["step"], h["eval_loss"])
        for h in history
        if h.get("event") == "eval" and h.get("eval_loss") is not None
    ]
    points = steps + evals
    if not points:
        return None
    max_step = max(s for s, _ in points) or 1
    lo, hi = min(v for _, v in points), max(v for _, v in points)
    span = (hi - lo) or 1.0

    def scale(series):
        return " ".join(
            f"{CHART_W * s / max_step:.1f},{CHART_H - 4 - (CHART_H - 8) * (v - lo) / span:.1f}"
            for s, v in series
        )

    return {
        "loss": scale(steps),
        "eval": scale(evals),
        "lo": lo,
        "hi": hi,
        "w": CHART_W,
        "h": CHART_H,
    }


def _context(run) -> dict:
    return {
        "project": run.dataset_version.project,
        "nav": "datasets",
        "run": run,
        "chart": loss_chart(run.metrics_history or []),
        "can_cancel": run.dataset_version.project.user_role == "admin" and not run.finished,
    }


@login_required
@require_GET
def run_detail(request, slug: str, run_id: int):
    """The run's page; with HX-Request, just the status partial (polled while it runs)."""
    run = get_run_for_user(request.user, run_id)
    if run.dataset_version.project.slug != slug:
        from django.http import Http404

        raise Http404("No such training run.")
    template = "training/partials/run_status.html" if request.htmx else "training/run_detail.html"
    response = render(request, template, _context(run))
    patch_vary_headers(response, ["HX-Request"])
    return response


@login_required
@require_POST
def run_cancel(request, slug: str, run_id: int):
    run = get_run_for_user(request.user, run_id, role="admin")
    if run.dataset_version.project.slug != slug:
        from django.http import Http404

        raise Http404("No such training run.")
    try:
        services_runs.training_run_cancel(run=run)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, "Cancel requested: the run stops after the step in progress.")
    return redirect("training:run_detail", slug=slug, run_id=run.pk)


# --------------------------------------------------------------------------------------------
# Launching a run from the dataset version page (admins only).

ADMIN = "admin"
# form field -> the key of that setting in a service ValidationError / the config dict
SETTING_FIELDS = {
    "lora_r": "config.lora.r",
    "lora_alpha": "config.lora.alpha",
    "learning_rate": "config.learning_rate",
    "num_epochs": "config.num_epochs",
    "max_steps": "config.max_steps",
    "batch_size": "config.batch_size",
}


def version_methods(version) -> list[tuple[str, str]]:
    """The methods a built version can train: sft needs sft rows, dpo preference rows."""
    if version.status != DatasetStatus.SUCCEEDED:
        return []
    counts = version.row_counts or {}
    return [
        (method, label)
        for method, label in TrainingMethod.choices
        if counts.get(services_runs.METHOD_KIND[method], {}).get("train")
    ]


class TrainRunForm(forms.Form):
    """The main settings of a run; everything else comes from ``defaults_for``. Values are
    checked by the service (``settings_resolve``), whose errors come back by field."""

    base_model = forms.ModelChoiceField(queryset=BaseModel.objects.none(), empty_label=None)
    method = forms.ChoiceField(choices=())
    lora_r = forms.IntegerField(label="LoRA r")
    lora_alpha = forms.FloatField(label="LoRA alpha")
    learning_rate = forms.FloatField(label="Learning rate")
    num_epochs = forms.FloatField(label="Epochs", help_text="Ignored when max steps is set.")
    max_steps = forms.IntegerField(label="Max steps", required=False)
    batch_size = forms.IntegerField(label="Batch size")

    def __init__(self, data=None, *, version, **kwargs):
        methods = version_methods(version)
        models = BaseModel.objects.all()
        initial = {}
        first_model = models.first()
        if methods and first_model is not None:
            defaults = defaults_for(methods[0][0], first_model.parameters)
            initial = {
                "base_model": first_model.pk,
                "method": methods[0][0],
                "lora_r": defaults.lora.r,
                "lora_alpha": defaults.lora.alpha,
                "learning_rate": defaults.learning_rate,
                "num_epochs": defaults.num_epochs,
                "max_steps": defaults.max_steps,
                "batch_size": defaults.batch_size,
            }
        super().__init__(data, initial=initial, **kwargs)
        self.fields["base_model"].queryset = models
        self.fields["method"].choices = methods

    def config(self) -> dict:
        data = self.cleaned_data
        config = {
            "lora": {"r": data["lora_r"], "alpha": data["lora_alpha"]},
            "learning_rate": data["learning_rate"],
            "num_epochs": data["num_epochs"],
            "batch_size": data["batch_size"],
        }
        if data.get("max_steps") is not None:
            config["max_steps"] = data["max_steps"]
        return config

    def add_service_errors(self, message_dict: dict) -> None:
        by_key = {key: name for name, key in SETTING_FIELDS.items()}
        by_key.update({"method": "method", "config.method": "method"})
        for key, errors in message_dict.items():
            name = by_key.get(key)
            for error in errors:
                self.add_error(name, error if name else f"{key}: {error}")


def train_form_for(version, user_role: str | None, data=None) -> TrainRunForm | None:
    """The launch form for the version page: admins only, built versions with trainable
    rows and at least one base model; None otherwise."""
    if user_role != ADMIN or not version_methods(version) or not BaseModel.objects.exists():
        return None
    return TrainRunForm(data, version=version)


@login_required
@require_POST
def run_launch(request, slug: str, version_id: int):
    """POST the launch form: a queued run and a redirect to its page, or the version page
    again with the errors by field (400)."""
    version = get_dataset_version_for_user(request.user, version_id, role=ADMIN, slug=slug)
    form = TrainRunForm(request.POST, version=version)
    if form.is_valid():
        try:
            run = services_runs.training_run_create(
                user=request.user,
                dataset_version=version,
                base_model=form.cleaned_data["base_model"],
                method=form.cleaned_data["method"],
                config=form.config(),
                via="web",
            )
        except ValidationError as exc:
            form.add_service_errors(exc.message_dict)
        except SettingsError as exc:
            form.add_service_errors({f"config.{exc.field}": [str(exc)]})
        else:
            messages.success(request, f"Run {run.pk} is queued.")
            return redirect("training:run_detail", slug=slug, run_id=run.pk)
    from training.views import datasets as dataset_views

    return dataset_views.version_detail_render(request, version, train_form=form, status=400)


# --------------------------------------------------------------------------------------------
# Adapters of a project: lineage and download.


def adapter_lineage(adapter) -> dict:
    """One adapter with its lineage for the pages: run → dataset version → decisions →
    experts. The summary comes from the adapter's manifest (``adapter_lineage_get``)."""
    run = adapter.run
    lineage = services_runs.adapter_lineage_get(adapter)
    return {
        "adapter": adapter,
        "run": run,
        "version": run.dataset_version,
        "lineage": lineage,
        "decisions": lineage["decisions_selected"],
        "items": lineage["decisions"],
        "experts": [e["username"] or f"user {e['id']}" for e in lineage["experts"]],
        "final_loss": adapter.metrics.get("last_loss", run.loss),
    }


@login_required
@require_GET
def adapter_list(request, slug: str):
    """The project's adapters, newest first, each with its lineage."""
    project = get_project_for_user(request.user, slug, role=Role.MANAGER)
    adapters = Adapter.objects.select_related(
        "run__dataset_version__project", "run__base_model"
    ).filter(run__dataset_version__project=project)[:100]
    context = {
        "project": project,
        "nav": "adapters",
        "adapters": [adapter_lineage(a) for a in adapters],
    }
    return render(request, "training/adapter_list.html", context)


def _adapter_in_project(request, slug: str, adapter_id: int, *, role: str = Role.MANAGER):
    adapter = get_adapter_for_user(request.user, adapter_id, role=role)
    if adapter.run.dataset_version.project.slug != slug:
        raise Http404("No such adapter.")
    return adapter


def _adapter_context(request, adapter, rebase_form=None) -> dict:
    project = adapter.run.dataset_version.project
    role = user_role(request.user, project)
    project.user_role = role
    is_admin = role == ADMIN
    if is_admin and rebase_form is None:
        rebase_form = RebaseForm(run=adapter.run)
    manifest = adapter.manifest or {}
    return {
        "project": project,
        "nav": "adapters",
        **adapter_lineage(adapter),
        "manifest": manifest,
        "manifest_json": json.dumps(manifest, indent=2, sort_keys=True, default=str),
        "metrics": sorted((adapter.metrics or {}).items()),
        "rebase_form": rebase_form if is_admin else None,
        "rebase_runs": TrainingRun.objects.filter(
            dataset_version=adapter.run.dataset_version, method=adapter.run.method
        )
        .exclude(pk=adapter.run_id)
        .select_related("base_model")[:20],
    }


@login_required
@require_GET
def adapter_detail(request, slug: str, adapter_id: int):
    """One adapter: manifest, final metrics, lineage (run → dataset version → decisions →
    experts), download, Try it, and (admins) "Train on another base model"."""
    adapter = _adapter_in_project(request, slug, adapter_id)
    return render(request, "training/adapter_detail.html", _adapter_context(request, adapter))


@login_required
@require_POST
def adapter_rebase(request, slug: str, adapter_id: int):
    """ "Train on another base model" (admins): the adapter's dataset version and settings on
    the chosen base model; a redirect to the new run's page, or the adapter page again (400)
    with the error under its field."""
    adapter = _adapter_in_project(request, slug, adapter_id, role=ADMIN)
    form = RebaseForm(request.POST, run=adapter.run)
    if form.is_valid():
        try:
            run = services_runs.training_run_rebase(
                run=adapter.run,
                base_model=form.cleaned_data["base_model"],
                user=request.user,
                via="web",
            )
        except ValidationError as exc:
            for key, errors in exc.message_dict.items():
                field = "base_model" if key == "base_model" else None
                form.add_error(field, errors if field else [f"{key}: {e}" for e in errors])
        else:
            messages.success(
                request,
                f"Run {run.pk} is queued: run {adapter.run_id}'s dataset version and settings "
                f"on {run.base_model.name}.",
            )
            return redirect("training:run_detail", slug=slug, run_id=run.pk)
    return render(
        request,
        "training/adapter_detail.html",
        _adapter_context(request, adapter, rebase_form=form),
        status=400,
    )


def adapter_archive(folder: Path, prefix: str, chunk_size: int = 1024 * 1024):
    """Every file under ``folder`` in one zip, compressed as it is sent."""
    files = (
        (f"{prefix}/{path.relative_to(folder).as_posix()}", path)
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink())
    )
    return zip_stream(files, chunk_size=chunk_size)


@login_required
@require_GET
def adapter_download(request, slug: str, adapter_id: int):
    adapter = _adapter_in_project(request, slug, adapter_id)
    from django.conf import settings

    root = Path(settings.STORAGE_DIR).resolve()
    folder = (root / adapter.path).resolve()
    if not folder.is_relative_to(root) or not folder.is_dir():
        raise Http404("This adapter's files are gone.")
    response = StreamingHttpResponse(
        adapter_archive(folder, f"adapter-{adapter.pk}"), content_type="application/zip"
    )
    response["Content-Disposition"] = f'attachment; filename="adapter-{adapter.pk}.zip"'
    return response
