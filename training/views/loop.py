"""The loop's pages: evaluation rounds (list, "Evaluate this adapter", results), models
(current model, promotion history, promote and roll back) and retraining (policy, cycles).

Managers read every page and may close a round being judged; admins start rounds, promote,
roll back, edit the policy and approve or cancel cycles; experts 403; outsiders 404. Thin:
parse (a form) → access check → one service → render or redirect with a message.
"""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.shortcuts import redirect, render
from django.utils.cache import patch_vary_headers
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from curation.models import Role
from curation.permissions import get_project_for_user
from training.models import (
    Adapter,
    DatasetStatus,
    DatasetVersion,
    EvaluationRound,
    RetrainingCycle,
    RoundStatus,
)
from training.permissions import (
    get_cycle_for_user,
    get_promotion_for_user,
    get_round_for_user,
)
from training.services import evaluation as services_evaluation
from training.services import policies as services_policies
from training.services import promotion as services_promotion

ADMIN = "admin"


def _errors_onto(form: forms.Form, exc: ValidationError, fields: dict[str, str]) -> None:
    """A service's errors onto the form's fields (``fields``: service key → form field)."""
    if not hasattr(exc, "error_dict"):
        form.add_error(None, exc.messages)
        return
    for key, errors in exc.message_dict.items():
        name = fields.get(key, key if key in form.fields else None)
        form.add_error(name, errors)


# ---- Evaluation rounds ------------------------------------------------------------------------


class EvaluationForm(forms.Form):
    adapter = forms.ModelChoiceField(queryset=Adapter.objects.none(), label="Adapter to evaluate")
    baseline = forms.ChoiceField(
        choices=[
            ("base", "Its base model alone"),
            ("promoted", "The currently promoted model"),
        ],
        initial="base",
        label="Against",
    )
    dataset_version = forms.ModelChoiceField(
        queryset=DatasetVersion.objects.none(),
        required=False,
        label="Held-out prompts from",
        empty_label="The eval split of the adapter's own dataset version",
    )
    limit = forms.IntegerField(
        required=False, min_value=1, label="At most this many prompts", help_text="Empty: all."
    )
    threshold = forms.FloatField(
        min_value=0,
        max_value=0.99,
        initial=services_evaluation.DEFAULT_PASS_RULE["threshold"],
        label="Pass when the interval's lower bound is above",
        widget=forms.NumberInput(attrs={"step": "0.01"}),
    )
    min_judged = forms.IntegerField(
        min_value=1,
        initial=services_evaluation.DEFAULT_PASS_RULE["min_judged"],
        label="Minimum judged items",
    )

    def __init__(self, *args, project, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["adapter"].queryset = Adapter.objects.filter(
            run__dataset_version__project=project
        ).select_related("run__base_model")
        self.fields["adapter"].label_from_instance = lambda a: (
            f"Adapter {a.pk} (run {a.run_id}, {a.run.method} on {a.run.base_model.name})"
        )
        self.fields["dataset_version"].queryset = DatasetVersion.objects.filter(
            project=project, status=DatasetStatus.SUCCEEDED
        )
        self.fields["dataset_version"].label_from_instance = lambda v: f"Version {v.pk}"


@login_required
@require_http_methods(["GET", "POST"])
def evaluation_list(request, slug: str):
    """The project's rounds; admins start one here (``?adapter=<id>`` picks the adapter)."""
    role = ADMIN if request.method == "POST" else Role.MANAGER
    project = get_project_for_user(request.user, slug, role=role)
    form = None
    if project.user_role == ADMIN:
        initial = {}
        if request.GET.get("adapter", "").isdecimal():
            initial["adapter"] = int(request.GET["adapter"])
        form = EvaluationForm(
            request.POST if request.method == "POST" else None, project=project, initial=initial
        )
    if request.method == "POST" and form.is_valid():
        values = form.cleaned_data
        try:
            round_ = services_evaluation.evaluation_round_create(
                subject=values["adapter"],
                baseline=values["baseline"],
                dataset_version=values["dataset_version"],
                limit=values["limit"],
                pass_rule={"threshold": values["threshold"], "min_judged": values["min_judged"]},
                created_by=request.user,
            )
        except ValidationError as exc:
            _errors_onto(
                form,
                exc,
                {"pass_rule.threshold": "threshold", "pass_rule.min_judged": "min_judged"},
            )
        else:
            messages.success(
                request, f"Evaluation round {round_.pk} started: generating both answers."
            )
            return redirect("training:evaluation_detail", slug=slug, round_id=round_.pk)
    rounds = EvaluationRound.objects.filter(project=project).select_related(
        "subject__run", "baseline_base_model", "created_by"
    )[:200]
    status = 400 if request.method == "POST" else 200
    context = {"project": project, "nav": "evaluations", "rounds": rounds, "form": form}
    return render(request, "training/loop/evaluation_list.html", context, status=status)


@login_required
@require_GET
def evaluation_detail(request, slug: str, round_id: int):
    """A round's results (managers: it shows which answer was whose). While it generates or
    is judged, the results partial polls itself (HX-Request answers just the partial)."""
    round_ = get_round_for_user(request.user, round_id, slug=slug)
    report = services_evaluation.evaluation_round_report(round_=round_)
    context = {
        "project": round_.project,
        "nav": "evaluations",
        "round": round_,
        "report": report,
        "live": round_.status in (RoundStatus.GENERATING, RoundStatus.JUDGING),
        "job": round_.generation_job,
    }
    template = (
        "training/loop/partials/round_results.html"
        if request.htmx
        else "training/loop/evaluation_detail.html"
    )
    response = render(request, template, context)
    patch_vary_headers(response, ["HX-Request"])
    return response


@login_required
@require_POST
def evaluation_close(request, slug: str, round_id: int):
    """ "Close round now": the frozen pass rule decides on the judgments so far."""
    round_ = get_round_for_user(request.user, round_id, slug=slug)
    try:
        round_ = services_evaluation.evaluation_round_close(round_=round_, closed_by=request.user)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        verdict = "passed" if round_.passed else "did not pass"
        messages.success(request, f"Round {round_.pk} closed: it {verdict}.")
    return redirect("training:evaluation_detail", slug=slug, round_id=round_id)


# ---- Models: current model, promotion history, promote, roll back -----------------------------


class PromoteForm(forms.Form):
    adapter = forms.ModelChoiceField(queryset=Adapter.objects.none())
    override = forms.BooleanField(
        required=False,
        label="I confirm promoting without a passed evaluation round",
    )
    reason = forms.CharField(
        required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 2})
    )

    def __init__(self, *args, project, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["adapter"].queryset = Adapter.objects.filter(
            run__dataset_version__project=project
        ).select_related("run__base_model")
        self.fields["adapter"].label_from_instance = lambda a: (
            f"Adapter {a.pk} (run {a.run_id} on {a.run.base_model.name})"
        )


def _models_context(project, *, form=None) -> dict:
    history = list(services_promotion.promotion_history(project=project)[:200])
    adapters = Adapter.objects.filter(run__dataset_version__project=project).select_related(
        "run__base_model"
    )[:200]
    passed = {
        r.subject_id: r
        for r in EvaluationRound.objects.filter(
            project=project, status=RoundStatus.COMPLETE, passed=True
        ).order_by("decided_at", "id")
    }
    is_admin = project.user_role == ADMIN
    return {
        "project": project,
        "nav": "models",
        "current": history[0] if history else None,
        "history": history,
        "adapters": [{"adapter": a, "passed_round": passed.get(a.pk)} for a in adapters],
        "form": form or (PromoteForm(project=project) if is_admin else None),
        "is_admin": is_admin,
    }


@login_required
@require_GET
def models_page(request, slug: str):
    project = get_project_for_user(request.user, slug, role=Role.MANAGER)
    return render(request, "training/loop/models.html", _models_context(project))


@login_required
@require_POST
def models_promote(request, slug: str):
    project = get_project_for_user(request.user, slug, role=ADMIN)
    form = PromoteForm(request.POST, project=project)
    if form.is_valid():
        values = form.cleaned_data
        try:
            promotion = services_promotion.promotion_create(
                project=project,
                adapter=values["adapter"],
                user=request.user,
                override=values["override"],
                reason=values["reason"],
            )
        except ValidationError as exc:
            _errors_onto(form, exc, {})
        else:
            messages.success(
                request, f"Adapter {promotion.adapter_id} is now the project's current model."
            )
            return redirect("training:models", slug=slug)
    return render(
        request, "training/loop/models.html", _models_context(project, form=form), status=400
    )


@login_required
@require_POST
def models_rollback(request, slug: str, promotion_id: int):
    to = get_promotion_for_user(request.user, promotion_id, role=ADMIN, slug=slug)
    reason = request.POST.get("reason", "")
    try:
        promotion = services_promotion.promotion_rollback(
            project=to.project, to=to, user=request.user, reason=reason
        )
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        what = f"adapter {promotion.adapter_id}" if promotion.adapter_id else "the base model"
        messages.success(request, f"Rolled back: {what} is the current model again.")
    return redirect("training:models", slug=slug)


# ---- Retraining: policy and cycles ------------------------------------------------------------


class PolicyForm(forms.Form):
    enabled = forms.BooleanField(required=False, label="Policy on")
    min_new_decisions = forms.IntegerField(
        required=False,
        min_value=1,
        label="Retrain after this many new accepted decisions",
        help_text="Since the last dataset version. Empty: this trigger is off.",
    )
    on_drift = forms.BooleanField(required=False, label="Retrain on a drift alert")
    require_approval = forms.BooleanField(
        required=False, label="Wait for an admin's approval before training"
    )


def _retraining_context(project, *, form=None) -> dict:
    policy = services_policies.policy_for(project=project)
    is_admin = project.user_role == ADMIN
    if form is None and is_admin:
        form = PolicyForm(
            initial={
                "enabled": policy.enabled,
                "min_new_decisions": policy.min_new_decisions,
                "on_drift": policy.on_drift,
                "require_approval": policy.require_approval,
            }
        )
    cycles = RetrainingCycle.objects.filter(project=project).select_related("approved_by")[:100]
    return {
        "project": project,
        "nav": "retraining",
        "policy": policy,
        "form": form,
        "is_admin": is_admin,
        "cycles": cycles,
        "template_run": services_policies.template_run(project=project),
        "new_decisions": services_policies.new_decisions_count(project=project),
    }


@login_required
@require_GET
def retraining_page(request, slug: str):
    project = get_project_for_user(request.user, slug, role=Role.MANAGER)
    return render(request, "training/loop/retraining.html", _retraining_context(project))


@login_required
@require_POST
def retraining_policy(request, slug: str):
    project = get_project_for_user(request.user, slug, role=ADMIN)
    form = PolicyForm(request.POST)
    if form.is_valid():
        try:
            services_policies.policy_update(project=project, user=request.user, **form.cleaned_data)
        except ValidationError as exc:
            _errors_onto(form, exc, {})
        else:
            messages.success(request, "Retraining policy saved.")
            return redirect("training:retraining", slug=slug)
    return render(
        request,
        "training/loop/retraining.html",
        _retraining_context(project, form=form),
        status=400,
    )


@login_required
@require_POST
def retraining_cycle_action(request, slug: str, cycle_id: int, action: str):
    cycle = get_cycle_for_user(request.user, cycle_id, role=ADMIN, slug=slug)
    try:
        if action == "approve":
            services_policies.cycle_approve(cycle=cycle, user=request.user)
            messages.success(request, f"Cycle {cycle.pk} approved: training is queued.")
        else:
            services_policies.cycle_cancel(cycle=cycle, user=request.user)
            messages.success(request, f"Cycle {cycle.pk} cancelled.")
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    return redirect("training:retraining", slug=slug)
