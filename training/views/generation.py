"""Generation pages: a project's generation jobs with the "New generation job" form, a job's
page (live progress, tokens per second, outputs page by page, Cancel), and the adapter page's
Try it panel (base model and adapter answers side by side).

Managers of the project and admins use them; experts 403, outsiders 404. Thin: parse (form)
→ access check → one service → render. Model output is untrusted text: autoescaped, shown in
``hx-disable`` regions.
"""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404
from django.shortcuts import redirect, render
from django.utils.cache import patch_vary_headers
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from curation.models import Role
from curation.permissions import get_project_for_user
from redline.lib.pagination import paginate_without_count
from training import selectors
from training.models import (
    Adapter,
    BaseModel,
    DatasetStatus,
    DatasetVersion,
    GenerationJob,
    GenerationPurpose,
    GenerationSource,
)
from training.permissions import get_adapter_for_user, get_generation_job_for_user
from training.services import generation as services_generation

OUTPUTS_PER_PAGE = 50
TRY_IT_MAX_CHARS = 8_000
TRY_IT_DECODING = {"max_new_tokens": 128, "temperature": 0.0}  # greedy: comparable answers


def _job_in(request, slug: str, job_id: int) -> GenerationJob:
    return get_generation_job_for_user(request.user, job_id, slug=slug)


# --------------------------------------------------------------------------------------------
# the form


def target_choices(project) -> list[tuple[str, str]]:
    """Every base model alone, and every adapter of the project on its own base model."""
    choices = [(f"base:{m.pk}", m.name) for m in BaseModel.objects.all()]
    adapters = Adapter.objects.select_related("run__base_model").filter(
        run__dataset_version__project=project
    )[:200]
    choices += [
        (
            f"adapter:{a.pk}",
            f"{a.run.base_model.name} + adapter {a.pk} (run {a.run_id}, {a.run.method})",
        )
        for a in adapters
    ]
    return choices


def eval_versions(project):
    return [
        v
        for v in DatasetVersion.objects.filter(project=project, status=DatasetStatus.SUCCEEDED)[
            :100
        ]
        if any(c.get("eval") for c in (v.row_counts or {}).values())
    ]


class GenerationJobForm(forms.Form):
    """A new job: which models, which prompts, how to decode. Values are checked by the
    service (``generation_job_create``), whose errors come back by field."""

    targets = forms.MultipleChoiceField(
        label="Models",
        widget=forms.CheckboxSelectMultiple,
        help_text="Each answers every prompt; its answers are tagged with its name.",
    )
    source = forms.ChoiceField(
        label="Prompts from",
        choices=[
            (GenerationSource.OPEN_ITEMS, "Open items of this project (one more candidate each)"),
            (GenerationSource.EVAL_SPLIT, "A dataset version's eval split (new items)"),
            (GenerationSource.PROMPTS, "The prompts typed below (new items)"),
            (GenerationSource.FILE, "A prompt file (new items)"),
        ],
    )
    dataset_version = forms.TypedChoiceField(
        label="Dataset version", required=False, coerce=int, empty_value=None
    )
    prompts_text = forms.CharField(
        label="Prompts",
        required=False,
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text="One prompt per line.",
    )
    prompts_file = forms.FileField(
        label="Prompt file",
        required=False,
        help_text='JSONL, one object a line: {"prompt": "…"} or {"messages": [...]}, '
        'optional "external_id".',
    )
    limit = forms.IntegerField(label="At most this many prompts", required=False, min_value=1)
    max_new_tokens = forms.IntegerField(label="Max new tokens")
    temperature = forms.FloatField(label="Temperature", help_text="0 is greedy.")
    top_p = forms.FloatField(label="Top-p")
    seed = forms.IntegerField(label="Seed")
    batch_size = forms.IntegerField(label="Batch size")

    DECODING = ("max_new_tokens", "temperature", "top_p", "seed", "batch_size")

    def __init__(self, data=None, files=None, *, project, **kwargs):
        defaults = services_generation.DecodingSettings()
        initial = {name: getattr(defaults, name) for name in self.DECODING}
        initial["source"] = GenerationSource.OPEN_ITEMS
        super().__init__(data, files, initial=initial, **kwargs)
        self.project = project
        self.fields["targets"].choices = target_choices(project)
        self.fields["dataset_version"].choices = [("", "—")] + [
            (v.pk, f"Version {v.pk} ({v.settings_text})") for v in eval_versions(project)
        ]

    def chosen_targets(self) -> list[tuple[BaseModel, Adapter | None]]:
        chosen = self.cleaned_data["targets"]
        bases = {m.pk: m for m in BaseModel.objects.all()}
        adapters = {
            a.pk: a
            for a in Adapter.objects.select_related(
                "run__base_model", "run__dataset_version"
            ).filter(run__dataset_version__project=self.project)
        }
        resolved = []
        for value in chosen:
            kind, _, pk = value.partition(":")
            if kind == "base":
                resolved.append((bases[int(pk)], None))
            else:
                adapter = adapters[int(pk)]
                resolved.append((adapter.run.base_model, adapter))
        return resolved

    def service_arguments(self) -> dict:
        data = self.cleaned_data
        version = None
        if data.get("dataset_version"):
            version = DatasetVersion.objects.filter(
                pk=data["dataset_version"], project=self.project
            ).first()
        source = data["source"]
        return {
            "targets": self.chosen_targets(),
            "source": source,
            "dataset_version": version if source == GenerationSource.EVAL_SPLIT else None,
            "prompts": services_generation.prompts_from_text(data.get("prompts_text"))
            if source == GenerationSource.PROMPTS
            else None,
            "prompts_file": data.get("prompts_file") if source == GenerationSource.FILE else None,
            "limit": data.get("limit"),
            "decoding": {name: data[name] for name in self.DECODING},
        }

    def add_service_errors(self, message_dict: dict) -> None:
        for key, errors in message_dict.items():
            if key.startswith("decoding."):
                name = key.split(".", 1)[1]
            elif key.startswith("targets"):
                name = "targets"
            elif key == "prompts":
                name = "prompts_text"
            else:
                name = key
            for error in errors:
                if name in self.fields:
                    self.add_error(name, error)
                else:
                    self.add_error(None, f"{key}: {error}")


# --------------------------------------------------------------------------------------------
# pages


@login_required
@require_http_methods(["GET", "POST"])
def generation_list(request, slug: str):
    """The project's generation jobs, and the form for a new one (POST: queue it and go to
    its page, or the form again with the errors by field, 400)."""
    project = get_project_for_user(request.user, slug, role=Role.MANAGER)
    status = 200
    if request.method == "POST":
        form = GenerationJobForm(request.POST, request.FILES, project=project)
        if form.is_valid():
            try:
                job = services_generation.generation_job_create(
                    project=project,
                    purpose=GenerationPurpose.CANDIDATES,
                    created_by=request.user,
                    **form.service_arguments(),
                )
            except ValidationError as exc:
                form.add_service_errors(exc.message_dict)
            else:
                messages.success(request, f"Generation job {job.pk} is queued.")
                return redirect("training:generation_detail", slug=slug, job_id=job.pk)
        status = 400
    else:
        form = GenerationJobForm(project=project)
    page = paginate_without_count(
        selectors.generation_job_list(project=project), request.GET.get("page")
    )
    context = {"project": project, "nav": "generation", "page": page, "form": form}
    return render(request, "training/generation/job_list.html", context, status=status)


def _detail_context(request, job) -> dict:
    page = paginate_without_count(
        selectors.generation_job_outputs(job=job),
        request.GET.get("page"),
        per_page=OUTPUTS_PER_PAGE,
    )
    return {
        "project": job.project,
        "nav": "generation",
        "job": job,
        "targets": list(job.targets.select_related("base_model", "adapter")),
        "outputs": page,
        "can_cancel": not job.finished,
    }


@login_required
@require_GET
def generation_detail(request, slug: str, job_id: int):
    """A job's page; with HX-Request, just its status and outputs (polled while it runs)."""
    job = _job_in(request, slug, job_id)
    template = (
        "training/generation/partials/job_status.html"
        if request.htmx
        else "training/generation/job_detail.html"
    )
    response = render(request, template, _detail_context(request, job))
    patch_vary_headers(response, ["HX-Request"])
    return response


@login_required
@require_POST
def generation_cancel(request, slug: str, job_id: int):
    job = _job_in(request, slug, job_id)
    try:
        services_generation.generation_job_cancel(job=job)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, "Cancel requested: the job stops after the batch in progress.")
    return redirect("training:generation_detail", slug=slug, job_id=job.pk)


# --------------------------------------------------------------------------------------------
# Try it (the adapter page's panel)


def _adapter_in(request, slug: str, adapter_id: int) -> Adapter:
    adapter = get_adapter_for_user(request.user, adapter_id, role=Role.MANAGER)
    if adapter.run.dataset_version.project.slug != slug:
        raise Http404("No such adapter.")
    return adapter


def _try_it_context(adapter, job, *, error: str = "", prompt: str = "") -> dict:
    answers = {}
    if job is not None and job.status == "succeeded":
        for output in job.outputs.select_related("target"):
            answers["adapter" if output.target.adapter_id else "base"] = output.output
    return {
        "adapter": adapter,
        "project": adapter.run.dataset_version.project,
        "job": job,
        "answers": answers,
        "error": error,
        "prompt": prompt,
    }


@login_required
@require_POST
def try_it_submit(request, slug: str, adapter_id: int):
    """Queue a try_it job (the base model alone, then base + this adapter) for the typed
    prompt; answers the result panel, which polls until both answers are in."""
    adapter = _adapter_in(request, slug, adapter_id)
    prompt = (request.POST.get("prompt") or "").strip()
    error = ""
    job = None
    if not prompt:
        error = "Type a prompt first."
    elif len(prompt) > TRY_IT_MAX_CHARS:
        error = f"A prompt of at most {TRY_IT_MAX_CHARS:,} characters, please."
    else:
        base = adapter.run.base_model
        try:
            job = services_generation.generation_job_create(
                project=adapter.run.dataset_version.project,
                targets=[(base, None), (base, adapter)],
                source=GenerationSource.PROMPTS,
                purpose=GenerationPurpose.TRY_IT,
                prompts=[prompt],
                decoding=TRY_IT_DECODING,
                created_by=request.user,
            )
        except ValidationError as exc:
            error = " ".join(exc.messages)
    return render(
        request,
        "training/generation/partials/try_it_result.html",
        _try_it_context(adapter, job, error=error, prompt=prompt),
        status=400 if error else 200,
    )


@login_required
@require_GET
def try_it_result(request, slug: str, adapter_id: int, job_id: int):
    adapter = _adapter_in(request, slug, adapter_id)
    job = _job_in(request, slug, job_id)
    if job.purpose != GenerationPurpose.TRY_IT or not job.targets.filter(adapter=adapter).exists():
        raise Http404("No such Try it job for this adapter.")
    prompt = job.prompts[0] if job.prompts and isinstance(job.prompts[0], str) else ""
    return render(
        request,
        "training/generation/partials/try_it_result.html",
        _try_it_context(adapter, job, prompt=prompt),
    )
