"""The managers' quality pages: dashboard, adjudication queue and page, gold answers, and the
item detail page's decisions. Persona matrix, methods, CSRF, hand-computed figures, query
counts."""

from __future__ import annotations

import re

import pytest
from django.test import Client
from django.urls import reverse

from curation.services.settings import project_settings_update
from feedback.models import AuditAction, AuditEvent, GoldAnswer, ItemOutcome, Review
from feedback.services import gold_set, review_amend
from tests.factories import ProjectFactory, UserFactory, item_add, membership_add

pytestmark = pytest.mark.django_db

TONE = {
    "key": "tone",
    "prompt": "Tone of the answer?",
    "type": "single_choice",
    "options": ["neutral", "rude"],
}
HELPFUL = {"key": "helpfulness", "prompt": "How helpful?", "type": "rating", "scale": 5}
NOTES = {"key": "notes", "prompt": "Anything else?", "type": "text"}


@pytest.fixture
def second_expert(project):
    expert = UserFactory(username="eve-expert")
    membership_add(project, expert, "expert")
    return expert


def set_k(project, k: int, **settings):
    project_settings_update(project=project, overlap=k, **settings)
    project.refresh_from_db()


@pytest.fixture
def disputed(project, personas, second_expert, decide):
    """k=2; one item the two experts disagree on (accept vs reject): needs adjudication."""
    set_k(project, 2)
    item = item_add(project, prompt="Capital of France?", candidates=[("Paris.", "m-alpha")])
    decide(project, personas["expert"], "accept", rationale="Looks right.")
    decide(project, second_expert, "reject", rationale="Too short.")
    outcome = ItemOutcome.objects.get(item=item)
    assert outcome.outcome == "needs_adjudication"
    return item


def url(name, project, item=None):
    args = [project.slug] if item is None else [project.slug, item.pk]
    return reverse(f"feedback:{name}", args=args)


def text(response) -> str:
    return re.sub(r"\s+", " ", response.content.decode())


# ---- Persona matrix, methods, CSRF --------------------------------------------------------

PAGES = ["dashboard", "adjudication_list", "adjudicate"]
POSTS = {
    "adjudicate": {"outcome": "rejected", "final_source": "text", "note": "no"},
    "gold_set": {"verdict": "accept"},
    "gold_clear": {},
}
PERSONA_STATUS = [("expert", 403), ("manager", 200), ("admin", 200), ("outsider", 404)]


def page_url(name, project, item):
    return url(name, project, item if name in ("adjudicate", "gold_set", "gold_clear") else None)


@pytest.mark.parametrize("name", PAGES)
@pytest.mark.parametrize(("persona", "status"), PERSONA_STATUS)
def test_quality_pages_answer_each_persona(
    personas, project, disputed, client_for, name, persona, status
):
    response = client_for(personas[persona]).get(page_url(name, project, disputed))
    assert response.status_code == status


@pytest.mark.parametrize("name", list(POSTS))
@pytest.mark.parametrize(("persona", "status"), PERSONA_STATUS)
def test_quality_posts_answer_each_persona(
    personas, project, disputed, client_for, name, persona, status
):
    response = client_for(personas[persona]).post(page_url(name, project, disputed), POSTS[name])
    assert response.status_code == (302 if status == 200 else status)
    changed = AuditEvent.objects.filter(
        item=disputed,
        action__in=[AuditAction.ITEM_ADJUDICATED, AuditAction.GOLD_SET, AuditAction.GOLD_CLEARED],
    ).exists()
    assert changed == (status == 200 and name != "gold_clear")


@pytest.mark.parametrize("name", [*PAGES, *POSTS])
def test_anonymous_visitors_are_sent_to_log_in(project, disputed, name):
    c = Client()
    target = page_url(name, project, disputed)
    for response in (c.get(target), c.post(target, POSTS.get(name, {}))):
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/login/")


@pytest.mark.parametrize(
    ("name", "method"),
    [
        ("dashboard", "post"),
        ("adjudication_list", "post"),
        ("adjudicate", "put"),
        ("adjudicate", "delete"),
        ("gold_set", "get"),
        ("gold_clear", "get"),
    ],
)
def test_wrong_methods_get_405(personas, project, disputed, client_for, name, method):
    c = client_for(personas["manager"])
    assert getattr(c, method)(page_url(name, project, disputed)).status_code == 405


@pytest.mark.parametrize("name", list(POSTS))
def test_posts_without_a_csrf_token_are_refused(personas, project, disputed, client_for, name):
    gold_set(item=disputed, actor=personas["manager"], verdict="reject")
    c = client_for(personas["manager"], enforce_csrf=True)
    data = POSTS[name] if name != "gold_set" else {"verdict": "accept"}
    assert c.post(page_url(name, project, disputed), data).status_code == 403
    assert ItemOutcome.objects.get(item=disputed).source != "adjudicated"
    assert GoldAnswer.objects.get(item=disputed).verdict == "reject"


@pytest.mark.parametrize("name", ["adjudicate", "gold_set", "gold_clear"])
def test_an_item_of_another_project_under_this_url_is_404(personas, project, client_for, name):
    other = ProjectFactory()
    membership_add(other, personas["manager"], "manager")
    item = item_add(other)
    response = client_for(personas["manager"]).post(page_url(name, project, item), POSTS[name])
    assert response.status_code == 404


def test_managers_see_quality_links_and_experts_do_not(personas, project, client_for):
    dashboard = url("dashboard", project)
    adjudication = url("adjudication_list", project)
    manager_page = client_for(personas["manager"]).get(
        reverse("curation:queue", args=[project.slug])
    )
    assert dashboard in text(manager_page) and adjudication in text(manager_page)
    expert_page = client_for(personas["expert"]).get(reverse("curation:queue", args=[project.slug]))
    assert dashboard not in text(expert_page) and adjudication not in text(expert_page)


# ---- Dashboard ----------------------------------------------------------------------------


@pytest.fixture
def hand_made(project, personas, second_expert, decide):
    """Three items, k=2, two experts (erin, eve), all outputs from model m-alpha:

    item   erin                      eve            outcome
    1      correct "Paris, France."  accept         accepted (both usable)
    2      accept                    reject         needs adjudication
    3      reject                    reject         rejected
    """
    set_k(project, 2)
    for priority in (3, 2, 1):
        item_add(project, priority=priority, candidates=[("Paris.", "m-alpha")])
    erin, eve = personas["expert"], second_expert
    decide(project, erin, "correct", corrected_output="Paris, France.", time_spent_ms=10_000)
    decide(project, erin, "accept", time_spent_ms=20_000)
    decide(project, erin, "reject", time_spent_ms=30_000)
    decide(project, eve, "accept", time_spent_ms=4_000)
    decide(project, eve, "reject", time_spent_ms=6_000)
    decide(project, eve, "reject", time_spent_ms=8_000)
    return project


def row(html: str, marker: str) -> str:
    """The text of the table row carrying ``marker`` (a data attribute)."""
    match = re.search(rf"<tr {marker}>(.*?)</tr>", html, re.S)
    assert match, marker
    return " ".join(re.sub(r"<[^>]+>", " ", match.group(1)).split())


def cells(row_text: str) -> list[str]:
    return row_text.split()


def test_dashboard_shows_hand_computed_figures(hand_made, personas, client_for):
    html = text(client_for(personas["manager"]).get(url("dashboard", hand_made)))
    # progress: 3 of 3 complete, 6 decisions, 1 accepted, 1 rejected, 1 waiting
    assert 'data-figure="complete">3 / 3<' in html
    assert 'data-figure="reviews">6<' in html
    assert 'data-figure="accepted">1<' in html
    assert 'data-figure="rejected">1<' in html
    assert re.search(r'data-figure="needs-adjudication"><a href="[^"]+">1</a>', html)
    # verdicts: item 1 (correct, accept) and item 2 (accept, reject) disagree, item 3 agrees:
    # raw agreement 1 pair of 3 = 0.33.
    verdict_raw = row(html, 'data-figure="verdict-raw"')
    assert "0.33" in verdict_raw and cells(verdict_raw)[-1] == "3"
    # Krippendorff's alpha (nominal): values c,a | a,r | r,r → n_c=1, n_a=2, n_r=3 (n=6);
    # observed disagreement 4/6, expected (36 - 1 - 4 - 9) / 30 = 22/30; α = 1 - (2/3)/(22/30)
    # = 1 - 10/11 = 0.09.
    verdict_alpha = row(html, 'data-figure="verdict-alpha-nominal"')
    assert "0.09" in verdict_alpha and "nominal" in verdict_alpha
    preference = row(html, 'data-figure="preference-raw"')
    assert "—" in preference and "no compared item has two preferences yet" in preference
    # experts: erin 3 reviewed, median 20 s, agrees with both decided items (1 and 3),
    # corrected 1 of 3; eve median 6 s, 0% corrections
    erin = row(html, 'data-expert="erin-expert"')
    assert cells(erin)[:3] == ["erin-expert", "3", "0"]
    assert "20.0 s" in erin and "100% (n=2)" in erin and "33%" in erin
    eve = row(html, 'data-expert="eve-expert"')
    assert "6.0 s" in eve and "100% (n=2)" in eve and cells(eve)[-1] == "0%"
    assert "—" in erin  # no gold items yet
    # the chart: one small multiple for m-alpha, a line per rate, and the table under it
    assert html.count('class="rates-chart"') == 1
    assert html.count("<polyline") == 3
    assert "Day (UTC)" in html and "Share of decisions" in html
    assert "<details" in html and "2 (33%)" in html and "1 (17%)" in html and "3 (50%)" in html
    assert 'style="' not in html


def test_dashboard_of_an_empty_project_says_so(personas, project, client_for):
    html = text(client_for(personas["manager"]).get(url("dashboard", project)))
    assert "No decisions yet." in html
    assert "No decisions in the last 90 days yet." in html
    assert "no item has two reviews yet" in html


def test_expert_table_shows_gold_accuracy_after_gold_items_are_answered(
    personas, project, client_for, decide
):
    first = item_add(project, priority=2)
    second = item_add(project, priority=1)
    gold_set(item=first, actor=personas["manager"], verdict="reject")
    gold_set(item=second, actor=personas["manager"], verdict="accept")
    decide(project, personas["expert"], "reject")  # matches
    html = text(client_for(personas["manager"]).get(url("dashboard", project)))
    assert "1/1 (100%)" in row(html, 'data-expert="erin-expert"')
    decide(project, personas["expert"], "reject")  # expected accept: a miss
    html = text(client_for(personas["manager"]).get(url("dashboard", project)))
    assert "1/2 (50%)" in row(html, 'data-expert="erin-expert"')


def test_dashboard_draws_one_chart_per_model_with_hostile_names_escaped(
    personas, project, client_for, decide
):
    item_add(project, priority=2, candidates=[("a", "<script>alert(1)</script>")])
    item_add(project, priority=1, candidates=[("b", "m-beta")])
    decide(project, personas["expert"], "accept")
    decide(project, personas["expert"], "reject")
    html = text(client_for(personas["manager"]).get(url("dashboard", project)))
    assert html.count('class="rates-chart"') == 2
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_dashboard_queries_are_bounded(
    personas, project, second_expert, client_for, decide, django_assert_max_num_queries
):
    set_k(project, 2, label_schema=[TONE, HELPFUL])
    for n in range(12):
        item_add(project, candidates=[(f"out {n}", f"model-{n % 3}")])
    for _ in range(12):
        for expert, verdict in ((personas["expert"], "accept"), (second_expert, "reject")):
            decide(project, expert, verdict, labels={"tone": "neutral", "helpfulness": 3})
    c = client_for(personas["manager"])
    # session, user, project, progress (3), agreement (1), rates (1), experts (3)
    with django_assert_max_num_queries(12):
        response = c.get(url("dashboard", project))
    assert response.status_code == 200
    assert text(response).count('class="rates-chart"') == 3


# ---- Adjudication -------------------------------------------------------------------------


def test_adjudication_list_shows_items_needing_a_decision(personas, project, disputed, client_for):
    item_add(project, external_id="agreed")
    html = text(client_for(personas["manager"]).get(url("adjudication_list", project)))
    assert url("adjudicate", project, disputed) in html
    assert "Capital of France?" in html
    assert "agreed" not in html


def test_adjudication_list_is_paginated_with_bounded_queries(
    personas, project, second_expert, client_for, decide, django_assert_max_num_queries
):
    set_k(project, 2)
    for n in range(55):
        item_add(project, external_id=f"d-{n:02d}", priority=100 - n)
    for _ in range(55):
        decide(project, personas["expert"], "accept")
        decide(project, second_expert, "reject")
    c = client_for(personas["manager"])
    # session, user, project, one page of outcomes with their items
    with django_assert_max_num_queries(4):
        first = text(c.get(url("adjudication_list", project)))
    assert first.count("Adjudicate</a>") == 50 and 'rel="next"' in first
    second = text(c.get(url("adjudication_list", project) + "?page=2"))
    assert second.count("Adjudicate</a>") == 5 and 'rel="next"' not in second


def test_adjudication_page_shows_decisions_side_by_side_with_a_word_diff(
    personas, project, second_expert, client_for, decide
):
    set_k(project, 2, label_schema=[TONE, NOTES])
    item = item_add(
        project,
        prompt="Where is the Louvre?",
        candidates=[("The Louvre is in Lyon.", "m-alpha"), ("In Paris.", "m-beta")],
    )
    first, second = item.candidates.order_by("position")
    decide(
        project,
        personas["expert"],
        "correct",
        candidate=first.pk,
        corrected_output="The Louvre is in Paris.",
        labels={"tone": "neutral", "notes": "Wrong city <b>fixed</b>"},
        rationale="City was wrong.",
        rating=4,
    )
    decide(project, second_expert, "accept", candidate=second.pk, rationale="Short but right.")
    html = text(client_for(personas["manager"]).get(url("adjudicate", project, item)))
    assert "erin-expert" in html and "eve-expert" in html
    assert "<del>Lyon</del><ins>Paris</ins><span>.</span>" in html
    assert "<span>The Louvre is in </span>" in html
    assert "Tone of the answer?" in html and "Wrong city &lt;b&gt;fixed&lt;/b&gt;" in html
    assert "City was wrong." in html and "Short but right." in html and "4 / 5" in html
    assert "Output #1 (m-alpha)" in html and "Output #2 (m-beta)" in html
    # the choice of final texts: the box, each output as it is, erin's correction
    assert f'value="candidate:{first.pk}"' in html
    assert f'value="review:{Review.objects.get(expert=personas["expert"]).pk}"' in html
    assert "erin-expert&#x27;s correction of output #1" in html
    # the box starts with the correction
    assert re.search(r"<textarea[^>]*>\s*The Louvre is in Paris.</textarea>", html)
    assert 'name="preferred"' in html


def test_adjudicating_sets_the_outcome_and_writes_an_audit_event(
    personas, project, disputed, client_for
):
    c = client_for(personas["manager"])
    response = c.post(
        url("adjudicate", project, disputed),
        {"outcome": "accepted", "final_source": "text", "final_text": "Paris.\r\nFrance."},
        follow=True,
    )
    assert response.redirect_chain[-1][0] == url("adjudication_list", project)
    assert "adjudicated: accepted." in text(response)
    outcome = ItemOutcome.objects.get(item=disputed)
    assert outcome.outcome == "accepted" and outcome.source == "adjudicated"
    assert outcome.decided_by == personas["manager"]
    assert outcome.final_text == "Paris.\nFrance."
    assert outcome.final_candidate == disputed.candidates.get()
    event = AuditEvent.objects.get(item=disputed, action=AuditAction.ITEM_ADJUDICATED)
    assert event.actor == personas["manager"]
    assert event.details["previous"] == "needs_adjudication"


def test_after_adjudicating_the_next_waiting_item_opens(
    personas, project, disputed, second_expert, client_for, decide
):
    following = item_add(project, prompt="Second disputed")
    decide(project, personas["expert"], "accept")
    decide(project, second_expert, "reject")
    response = client_for(personas["manager"]).post(
        url("adjudicate", project, disputed), {"outcome": "rejected", "note": "Too short."}
    )
    assert response.status_code == 302
    assert response["Location"] == url("adjudicate", project, following)
    outcome = ItemOutcome.objects.get(item=disputed)
    assert outcome.outcome == "rejected" and outcome.final_text == ""
    assert outcome.note == "Too short."


def test_a_manager_can_pick_an_experts_correction_or_an_output(
    personas, project, second_expert, client_for, decide
):
    set_k(project, 2)
    item = item_add(project, candidates=[("Lyon.", "m-a"), ("Paris.", "m-b")])
    lyon, paris = item.candidates.order_by("position")
    decide(project, personas["expert"], "correct", candidate=lyon.pk, corrected_output="Paris!")
    decide(project, second_expert, "reject", candidate=lyon.pk)
    correction = Review.objects.get(expert=personas["expert"])
    c = client_for(personas["manager"])
    c.post(
        url("adjudicate", project, item),
        {"outcome": "accepted", "final_source": f"review:{correction.pk}", "final_text": "x"},
    )
    outcome = ItemOutcome.objects.get(item=item)
    assert outcome.final_text == "Paris!" and outcome.final_candidate == lyon
    c.post(
        url("adjudicate", project, item),
        {"outcome": "accepted", "final_source": f"candidate:{paris.pk}", "preferred": paris.pk},
    )
    outcome.refresh_from_db()
    assert outcome.final_text == "Paris." and outcome.final_candidate == paris
    assert outcome.preferred_candidate == paris and not outcome.tie
    c.post(
        url("adjudicate", project, item),
        {"outcome": "accepted", "final_source": f"candidate:{paris.pk}", "preferred": "tie"},
    )
    outcome.refresh_from_db()
    assert outcome.tie and outcome.preferred_candidate is None


def test_adjudication_errors_are_shown_on_the_form(personas, project, disputed, client_for):
    c = client_for(personas["manager"])
    response = c.post(
        url("adjudicate", project, disputed),
        {"outcome": "accepted", "final_source": "text", "final_text": "  "},
    )
    assert response.status_code == 400
    assert "Write the final text or pick the output to keep." in text(response)
    response = c.post(url("adjudicate", project, disputed), {"final_source": "nonsense"})
    assert response.status_code == 400
    assert "This field is required." in text(response)
    assert "Select a valid choice." in text(response)
    assert ItemOutcome.objects.get(item=disputed).outcome == "needs_adjudication"


def test_an_item_without_all_its_reviews_cannot_be_adjudicated(
    personas, project, client_for, second_expert, decide
):
    set_k(project, 2)
    item = item_add(project)
    decide(project, personas["expert"], "accept")
    c = client_for(personas["manager"])
    assert "1 of 2 reviews" in text(c.get(url("adjudicate", project, item)))
    response = c.post(url("adjudicate", project, item), {"outcome": "rejected"})
    assert response.status_code == 400
    assert "it can be adjudicated once it has them all" in text(response)
    assert not ItemOutcome.objects.filter(item=item).exists()


def test_a_manager_can_override_an_item_already_decided(personas, project, client_for, decide):
    item = item_add(project)
    decide(project, personas["expert"], "accept")
    assert ItemOutcome.objects.get(item=item).source == "unanimous"
    c = client_for(personas["manager"])
    detail = text(c.get(reverse("curation:item_detail", args=[project.slug, item.pk])))
    assert url("adjudicate", project, item) in detail and "Override the outcome" in detail
    page = text(c.get(url("adjudicate", project, item)))
    assert "already decided" in page
    assert re.search(r'value="accepted"[^>]*checked', page)
    c.post(url("adjudicate", project, item), {"outcome": "rejected", "note": "Outdated."})
    outcome = ItemOutcome.objects.get(item=item)
    assert (outcome.outcome, outcome.source, outcome.decided_by) == (
        "rejected",
        "adjudicated",
        personas["manager"],
    )


# ---- Gold ---------------------------------------------------------------------------------


def detail_url(item):
    return reverse("curation:item_detail", args=[item.project.slug, item.pk])


def test_a_manager_sets_and_clears_a_gold_answer(personas, project, client_for):
    set_k(project, 1, label_schema=[TONE, HELPFUL, NOTES])
    item = item_add(project, candidates=[("A", "m1"), ("B", "m2")])
    a, b = item.candidates.order_by("position")
    c = client_for(personas["manager"])
    page = text(c.get(detail_url(item)))
    assert "Not a gold item." in page
    assert 'name="label_tone"' in page and 'name="label_helpfulness"' in page
    assert 'name="label_notes"' not in page  # free text is not scored
    response = c.post(
        url("gold_set", project, item),
        {
            "verdict": "correct",
            "preferred": b.pk,
            "label_tone": "rude",
            "label_helpfulness": "2",
            "note": "B is better",
        },
        follow=True,
    )
    assert "Gold answer saved." in text(response)
    gold = GoldAnswer.objects.get(item=item)
    assert (gold.verdict, gold.preferred_candidate, gold.tie) == ("correct", b, False)
    assert gold.labels == {"tone": "rude", "helpfulness": 2}
    assert gold.note == "B is better" and gold.created_by == personas["manager"]
    page = text(response)
    assert "This item is a <strong>gold item</strong>" in page
    assert re.search(r'value="correct"[^>]*checked', page)
    assert re.search(rf'<option value="{b.pk}" selected>', page)
    assert AuditEvent.objects.filter(item=item, action=AuditAction.GOLD_SET).exists()

    response = c.post(url("gold_clear", project, item), follow=True)
    assert "Gold answer cleared." in text(response)
    assert not GoldAnswer.objects.filter(item=item).exists()
    assert AuditEvent.objects.filter(item=item, action=AuditAction.GOLD_CLEARED).exists()
    response = c.post(url("gold_clear", project, item), follow=True)
    assert "This item had no gold answer." in text(response)


def test_a_bad_gold_answer_is_refused_with_errors_on_the_item_page(personas, project, client_for):
    item = item_add(project, prompt="Gold prompt")
    response = client_for(personas["manager"]).post(
        url("gold_set", project, item), {"verdict": "maybe"}
    )
    assert response.status_code == 400
    page = text(response)
    assert "Select a valid choice." in page and "Gold prompt" in page
    assert not GoldAnswer.objects.filter(item=item).exists()


def test_experts_never_see_gold_markers(personas, project, client_for):
    item = item_add(project)
    gold_set(item=item, actor=personas["manager"], verdict="reject", note="secret gold note")
    c = client_for(personas["expert"])
    c.post(reverse("curation:queue_start", args=[project.slug]))
    for target in (
        reverse("curation:queue", args=[project.slug]),
        reverse("feedback:review", args=[project.slug]),
    ):
        response = c.get(target)
        assert response.status_code == 200, target
        assert "gold" not in response.content.decode().lower(), target
    for target in (detail_url(item), url("dashboard", project)):
        assert c.get(target).status_code == 403


# ---- Item detail: outcome, reviews, gold, audit -------------------------------------------


def test_item_detail_shows_outcome_reviews_revisions_gold_and_audit(
    personas, project, second_expert, client_for, decide
):
    set_k(project, 2)
    item = item_add(project, candidates=[("Paris.", "m-alpha")])
    first = decide(project, personas["expert"], "accept", rationale="Fine.").review
    decide(project, second_expert, "correct", corrected_output="Paris, France.")
    review_amend(review=first, editor=personas["expert"], rationale="Fine, checked.")
    gold_set(item=item, actor=personas["manager"], verdict="accept")
    html = text(client_for(personas["manager"]).get(detail_url(item)))
    assert "Accepted" in html and "All experts agreed" in html
    assert "Paris, France." in html  # the final text
    assert "erin-expert" in html and "eve-expert" in html
    assert 'data-revisions="2">2 (amended)' in html and 'data-revisions="1">1<' in html
    assert "Fine, checked." in html
    assert "<span>Paris</span><ins>, France</ins><span>.</span>" in html
    assert "This item is a <strong>gold item</strong>" in html
    for label in ("Review submitted", "Review amended", "Gold answer set"):
        assert label in html
    assert 'style="' not in html


def test_item_detail_queries_stay_bounded_with_reviews_and_audit(
    personas, project, second_expert, client_for, decide, django_assert_max_num_queries
):
    set_k(project, 3, label_schema=[TONE])
    third = UserFactory(username="ivy-expert")
    membership_add(project, third, "expert")
    item = item_add(project, candidates=[("A", "m1"), ("B", "m2")])
    a, _ = item.candidates.order_by("position")
    for expert in (personas["expert"], second_expert, third):
        decide(project, expert, "reject", candidate=a.pk, labels={"tone": "rude"})
    gold_set(item=item, actor=personas["manager"], verdict="reject")
    c = client_for(personas["manager"])
    # session, user, item + project, role, candidates, assignments, outcome + gold, reviews,
    # audit events
    with django_assert_max_num_queries(9):
        response = c.get(detail_url(item))
    assert text(response).count('class="decision verdict-reject"') == 3
