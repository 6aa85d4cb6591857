"""The expert review page (htmx): one item at a time, keyboard first.

- ``GET  /projects/<slug>/review/`` claims the expert's next item (an expert who holds a lease
  gets it back) and answers the whole page, or to htmx the item fragment alone.
- ``POST /projects/<slug>/review/<item>/`` submits a decision through ``review_submit`` and
  answers the next item's fragment, which htmx swaps in place of the one just decided.
- ``POST /projects/<slug>/review/<item>/renew/`` extends the lease while the page is open.
- ``/projects/<slug>/review/decisions/`` lists the expert's recent decisions ("Previous");
  ``…/decisions/<review>/`` amends one (``review_amend``) and shows its revisions.

Item text (prompt, messages, outputs), corrections and rationales are untrusted: templates
autoescape them inside ``hx-disable`` regions and nothing here marks them safe. The only
HTML built from user text is the guidelines, through ``redline.lib.markdown``'s sanitiser.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404
from django.shortcuts import redirect, render
from django.utils.cache import patch_vary_headers
from django.utils.safestring import SafeString
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from curation.models import Candidate, GuidelineVersion, Item, Project, ReviewMode
from curation.permissions import get_project_for_user
from curation.selectors import guideline_current
from curation.services.queue import Claim, ItemFull, LeaseLost, queue_claim_next, queue_lease_renew
from feedback.forms import LABEL_PREFIX, ReviewAmendForm, ReviewDecisionForm, labels_from_post
from feedback.models import Review, Verdict
from feedback.selectors import candidate_order_for, review_recent_for_expert, review_revisions
from feedback.services import AlreadyDecided, review_amend, review_submit
from redline.lib.markdown import render_markdown

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
RATING_CHOICES = range(1, 6)
RECENT_DECISIONS = 20
PAGE_TEMPLATE = "feedback/review.html"
ITEM_PARTIAL = "feedback/partials/review_item.html"
EMPTY_PARTIAL = "feedback/partials/review_empty.html"
LOST_PARTIAL = "feedback/partials/review_lost.html"
LEASE_PARTIAL = "feedback/partials/review_lease.html"
_UNKNOWN: Any = object()  # the guideline version the page shows, when no form said


# ---- helpers ------------------------------------------------------------------------------


@lru_cache(maxsize=32)
def _guideline_html(text: str) -> SafeString:
    """Guideline versions are immutable, so their rendering is cached by text."""
    return render_markdown(text)


@dataclass(frozen=True)
class ShownCandidate:
    candidate: Candidate
    letter: str
    number: int  # the key that prefers it (1, 2, ...)


def _shown_candidates(item: Item, expert) -> list[ShownCandidate]:
    """The item's outputs in this expert's order (stable per expert; shuffled when 2+)."""
    candidates = list(Candidate.objects.filter(item_id=item.pk).order_by("position"))
    by_id = {c.pk: c for c in candidates}
    order = candidate_order_for(
        item_id=item.pk, expert_id=expert.pk, candidate_ids=[c.pk for c in candidates]
    )
    return [
        ShownCandidate(candidate=by_id[cid], letter=LETTERS[i % 26], number=i + 1)
        for i, cid in enumerate(order)
    ]


def _questions(schema: list[dict], answers: dict, errors: dict) -> list[dict[str, Any]]:
    """The label questions with the answer typed so far and their error, for the template."""
    questions = []
    for q in schema or []:
        if q["type"] == "rating":
            options = [str(n) for n in range(1, int(q.get("scale") or 5) + 1)]
        else:
            options = list(q.get("options") or [])
        value = answers.get(q["key"])
        chosen = {str(v) for v in value} if isinstance(value, list) else {str(value)}
        questions.append(
            {
                "key": q["key"],
                "name": LABEL_PREFIX + q["key"],
                "prompt": q.get("prompt") or q["key"],
                "type": q["type"],
                "required": bool(q.get("required")),
                "options": [
                    {"value": o, "number": i + 1, "checked": o in chosen}
                    for i, o in enumerate(options)
                ],
                "value": "" if value is None or isinstance(value, list) else str(value),
                "errors": errors.get(f"labels.{q['key']}", []),
            }
        )
    return questions


def _error_dict(exc: ValidationError) -> dict[str, list[str]]:
    if hasattr(exc, "error_dict"):
        return exc.message_dict
    return {"__all__": exc.messages}


def _item_in_project(project: Project, item_id: int) -> Item:
    """The item, if it belongs to ``project`` (whose access the caller checked); else 404."""
    item = Item.objects.filter(project_id=project.pk, pk=item_id).first()
    if item is None:
        raise Http404("No such item.")
    item.project = project
    return item


def _guideline_context(project: Project) -> dict[str, Any]:
    guideline = guideline_current(project=project)
    return {
        "guideline": guideline,
        "guideline_html": _guideline_html(guideline.text) if guideline else "",
    }


def _item_context(
    request,
    project: Project,
    item: Item,
    *,
    claim: Claim | None = None,
    draft: dict[str, Any] | None = None,
    errors: dict[str, list[str]] | None = None,
    guideline: GuidelineVersion | None = None,
) -> dict[str, Any]:
    draft = draft or {}
    errors = errors or {}
    shown = _shown_candidates(item, request.user)
    multi = len(shown) > 1
    known = {"corrected_output", "rating", "rationale", "candidate", "preferred_candidate"}
    general = [
        message
        for field, field_errors in errors.items()
        if field not in known and not field.startswith("labels.")
        for message in field_errors
    ]
    correct_candidate = str(
        draft.get("correct_candidate") or (shown[0].candidate.pk if shown else "")
    )
    return {
        "project": project,
        "item": item,
        "shown": shown,
        "multi": multi,
        "compare": multi and ReviewMode.COMPARE in project.review_modes,
        "tie_key": len(shown) + 1,
        "candidate_order": ",".join(str(s.candidate.pk) for s in shown),
        "correct_candidate": correct_candidate,
        "questions": _questions(project.label_schema, draft.get("labels") or {}, errors),
        "rating_choices": RATING_CHOICES,
        "draft": draft,
        "errors": errors,
        "general_errors": general,
        "choice_errors": errors.get("candidate", []) + errors.get("preferred_candidate", []),
        "fresh": not draft,
        "idempotency_key": draft.get("idempotency_key") or secrets.token_urlsafe(18),
        "guideline_id": guideline.pk if guideline else "",
        "expires_at": claim.expires_at if claim else None,
        "renew_every": max(project.lease_seconds // 3, 10),
    }


def _render_claim(
    request,
    project: Project,
    claim: Claim | None,
    *,
    decided: int | None = None,
    shown_guideline: Any = _UNKNOWN,
):
    """The page (or, to htmx, the fragment) for the expert's claimed item, or "nothing left".

    ``decided`` is the item just decided (the page drops its saved draft). The guidelines
    panel sits outside the fragment; it is re-sent out of band only when the version shown
    (``shown_guideline``, the id the submitted form carried) is no longer the current one.
    """
    guidelines = _guideline_context(project)
    guideline = guidelines["guideline"]
    if claim is None:
        context = {"project": project}
        template = EMPTY_PARTIAL
    else:
        context = _item_context(request, project, claim.item, claim=claim, guideline=guideline)
        template = ITEM_PARTIAL
    context.update(guidelines)
    context["decided"] = decided
    context["nav"] = "queue"
    if not request.htmx:
        context["panel_template"] = template
        return render(request, PAGE_TEMPLATE, context)
    current_id = guideline.pk if guideline else None
    context["guidelines_oob"] = shown_guideline is _UNKNOWN or shown_guideline != current_id
    return render(request, template, context)


LOST_MESSAGES = {
    LeaseLost: "This item was given to someone else while you worked on it.",
    ItemFull: "This item already has all its reviews.",
    AlreadyDecided: "You already decided this item.",
}


def _render_lost(request, project: Project, item: Item, exc: Exception, draft: dict[str, Any]):
    """The item is gone: say why, show what the expert typed (read-only, to copy), and offer
    the next item. Nothing typed is dropped without being shown."""
    context = {
        "project": project,
        "item": item,
        "reason": next(m for cls, m in LOST_MESSAGES.items() if isinstance(exc, cls)),
        "draft": draft,
        "amend_review": exc.review if isinstance(exc, AlreadyDecided) else None,
        "nav": "queue",
    }
    if request.htmx:
        return render(request, LOST_PARTIAL, context)
    context.update(_guideline_context(project))
    context["panel_template"] = LOST_PARTIAL
    return render(request, PAGE_TEMPLATE, context, status=409)


def _decision_form(request, project: Project, item: Item) -> ReviewDecisionForm:
    compare = (
        ReviewMode.COMPARE in project.review_modes
        and Candidate.objects.filter(item_id=item.pk).count() > 1
    )
    return ReviewDecisionForm(request.POST, schema=project.label_schema, compare=compare)


# ---- the review page ----------------------------------------------------------------------


@login_required
@require_GET
def review_page(request, slug: str):
    """Claim the expert's next item and show it (managers and admins may review too)."""
    project = get_project_for_user(request.user, slug)
    claim = queue_claim_next(project=project, expert=request.user)
    response = _render_claim(request, project, claim)
    patch_vary_headers(response, ["HX-Request"])
    return response


@login_required
@require_POST
def review_submit_view(request, slug: str, item_id: int):
    """Record the decision, then answer the next item (htmx) or redirect to the page."""
    project = get_project_for_user(request.user, slug)
    item = _item_in_project(project, item_id)
    form = _decision_form(request, project, item)
    if form.is_valid():
        try:
            review_submit(item=item, expert=request.user, **form.submit_kwargs())
        except ValidationError as exc:
            errors = _error_dict(exc)
        except (LeaseLost, ItemFull, AlreadyDecided) as exc:
            return _render_lost(request, project, item, exc, form.draft())
        else:
            if not request.htmx:
                return redirect("feedback:review", slug=project.slug)
            claim = queue_claim_next(project=project, expert=request.user)
            return _render_claim(
                request,
                project,
                claim,
                decided=item.pk,
                shown_guideline=form.cleaned_data["guideline_version"],
            )
    else:
        errors = {field: list(messages_) for field, messages_ in form.errors.items()}
    # Same item again, with every field as typed and the errors beside them.
    guideline = guideline_current(project=project)
    context = _item_context(
        request, project, item, draft=form.draft(), errors=errors, guideline=guideline
    )
    context["nav"] = "queue"
    if request.htmx:  # htmx swaps 2xx answers only; the fragment carries the errors
        context["guidelines_oob"] = False
        return render(request, ITEM_PARTIAL, context)
    context.update(
        guideline=guideline, guideline_html=_guideline_html(guideline.text) if guideline else ""
    )
    context["panel_template"] = ITEM_PARTIAL
    return render(request, PAGE_TEMPLATE, context, status=400)


@login_required
@require_POST
def review_renew(request, slug: str, item_id: int):
    """Extend the lease (the page calls this every lease/3 seconds). When the lease is gone
    the answer replaces the item with the lost-item panel, keeping the draft sent along."""
    project = get_project_for_user(request.user, slug)
    item = _item_in_project(project, item_id)
    try:
        assignment = queue_lease_renew(item=item, expert=request.user)
    except LeaseLost as exc:
        if Review.objects.filter(item_id=item.pk, expert=request.user).exists():
            # Decided meanwhile (a renewal racing the submit): nothing to warn about.
            response = render(request, LEASE_PARTIAL, {"lease_decided": True})
            response["HX-Reswap"] = "none"
            return response
        response = _render_lost(
            request, project, item, exc, _decision_form(request, project, item).draft()
        )
        if request.htmx:
            response["HX-Retarget"] = "#review"
            response["HX-Reswap"] = "outerHTML"
        else:
            response.status_code = 409
        return response
    return render(request, LEASE_PARTIAL, {"expires_at": assignment.expires_at})


# ---- previous decisions ---------------------------------------------------------------------


@login_required
@require_GET
def review_decisions(request, slug: str):
    """The expert's recent decisions in the project, newest first, to amend one."""
    project = get_project_for_user(request.user, slug)
    reviews = review_recent_for_expert(project=project, expert=request.user, limit=RECENT_DECISIONS)
    context = {"project": project, "nav": "queue", "reviews": reviews}
    return render(request, "feedback/review_decisions.html", context)


def _own_review(project: Project, user, review_id: int) -> Review:
    """The user's own review in the project; 404 for anyone else's (managers included)."""
    review = (
        Review.objects.select_related("item", "guideline_version")
        .filter(pk=review_id, project_id=project.pk, expert_id=user.pk)
        .first()
    )
    if review is None:
        raise Http404("No such decision.")
    review.item.project = project
    return review


def _preference_value(review: Review) -> str:
    if review.tie:
        return "tie"
    return str(review.preferred_candidate_id or "")


def _revision_rows(review: Review, letters: dict[int, str]) -> list[dict[str, Any]]:
    rows = []
    for revision in review_revisions(review=review):
        data = revision.data or {}
        preferred = data.get("preferred_candidate")
        rows.append(
            {
                "revision": revision,
                "data": data,
                "candidate": letters.get(data.get("candidate"), ""),
                "preference": "tie" if data.get("tie") else letters.get(preferred, ""),
                "labels": [
                    (key, ", ".join(map(str, v)) if isinstance(v, list) else str(v))
                    for key, v in sorted((data.get("labels") or {}).items())
                ],
            }
        )
    return rows


@login_required
@require_http_methods(["GET", "POST"])
def review_decision(request, slug: str, review_id: int):
    """One of the expert's decisions: amend it (a new revision) and see its history."""
    project = get_project_for_user(request.user, slug)
    review = _own_review(project, request.user, review_id)
    shown = _shown_candidates(review.item, request.user)
    letters = {s.candidate.pk: s.letter for s in shown}
    multi = len(shown) > 1
    amendable = review.verdict != Verdict.SKIP
    errors: dict[str, list[str]] = {}
    status = 200
    if request.method == "POST":
        form = ReviewAmendForm(request.POST, schema=project.label_schema, multi=multi)
        if not amendable:
            errors = {"verdict": ["A skipped item cannot be amended."]}
        elif form.is_valid():
            before = review.revision
            try:
                amended = review_amend(review=review, editor=request.user, **form.amend_kwargs())
            except ValidationError as exc:
                errors = _error_dict(exc)
            else:
                if amended.revision == before:
                    messages.info(request, "Nothing changed, so no new revision was made.")
                else:
                    messages.success(request, f"Saved as revision {amended.revision}.")
                return redirect("feedback:review_decision", slug=project.slug, review_id=review.pk)
        else:
            errors = {field: list(m) for field, m in form.errors.items()}
        status = 400
        values = {
            "verdict": request.POST.get("verdict", ""),
            "candidate": request.POST.get("candidate", ""),
            "corrected_output": request.POST.get("corrected_output", ""),
            "preference": request.POST.get("preference", ""),
            "rating": request.POST.get("rating", ""),
            "rationale": request.POST.get("rationale", ""),
            "labels": labels_from_post(request.POST, project.label_schema),
        }
    else:
        values = {
            "verdict": review.verdict,
            "candidate": str(review.candidate_id or ""),
            "corrected_output": review.corrected_output,
            "preference": _preference_value(review),
            "rating": str(review.rating or ""),
            "rationale": review.rationale,
            "labels": review.labels or {},
        }
    known = {"verdict", "candidate", "corrected_output", "preferred_candidate", "tie", "rating"}
    known |= {"rationale", "preference"}
    context = {
        "project": project,
        "nav": "queue",
        "review": review,
        "item": review.item,
        "shown": shown,
        "multi": multi,
        "amendable": amendable,
        "values": values,
        "original_output": next(
            (s.candidate.output for s in shown if s.candidate.pk == review.candidate_id),
            shown[0].candidate.output if shown else "",
        ),
        "questions": _questions(project.label_schema, values["labels"] or {}, errors),
        "rating_choices": RATING_CHOICES,
        "verdicts": [(v, label) for v, label in Verdict.choices if v != Verdict.SKIP],
        "errors": errors,
        "general_errors": [
            m
            for f, ms in errors.items()
            if f not in known and not f.startswith("labels.")
            for m in ms
        ],
        "preference_errors": errors.get("preferred_candidate", []) + errors.get("tie", []),
        "revisions": _revision_rows(review, letters),
    }
    return render(request, "feedback/review_decision.html", context, status=status)
