"""Training-run pages: a run's live page (status, progress, ETA, loss chart, log tail,
Cancel) and its htmx partial. Managers and admins read; admins cancel; experts 403,
outsiders 404 (``get_run_for_user``). Thin: parse → access check → one service → render.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.shortcuts import redirect, render
from django.utils.cache import patch_vary_headers
from django.views.decorators.http import require_GET, require_POST

from training import services_runs
from training.permissions_runs import get_run_for_user

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
