"""Project settings, label schema validation and guideline versions: services, pages, API."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.db import transaction
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from curation import selectors
from curation.models import Assignment, GuidelineVersion, Project
from curation.services.settings import (
    guideline_publish,
    label_schema_validate,
    project_settings_update,
)
from redline.lib.markdown import render_markdown
from tests.factories import item_add

pytestmark = pytest.mark.django_db

TONE = {
    "key": "tone",
    "prompt": "Tone?",
    "type": "single_choice",
    "options": ["neutral", "rude"],
    "required": True,
}
RATING = {"key": "helpfulness", "prompt": "How helpful?", "type": "rating", "scale": 5}
VALID_SCHEMA = [
    TONE,
    {"key": "issues", "prompt": "Issues?", "type": "multiple_choice", "options": ["a", "b"]},
    RATING,
    {"key": "notes", "prompt": "Notes", "type": "text"},
]


def schema_errors(schema) -> list[str]:
    with pytest.raises(ValidationError) as exc:
        label_schema_validate(schema)
    return exc.value.message_dict["label_schema"]


def add_submitted_review(project, item, expert):
    """A counted decision: what the review service leaves behind (state submitted, slot held)."""
    now = timezone.now()
    return Assignment.objects.create(
        project=project,
        item=item,
        expert=expert,
        state="submitted",
        slot=0,
        leased_at=now,
        expires_at=now,
    )


# ---- Label schema -------------------------------------------------------------------------


def test_a_valid_schema_is_returned_normalised():
    clean = label_schema_validate(VALID_SCHEMA)
    assert [q["key"] for q in clean] == ["tone", "issues", "helpfulness", "notes"]
    assert clean[1]["required"] is False  # defaulted
    assert clean[2]["scale"] == 5
    assert "options" not in clean[3]
    assert label_schema_validate([]) == []


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ({"key": "tone"}, "The label schema must be a list of questions."),
        (["tone"], "question 1: must be an object with key, prompt and type"),
        ([{"prompt": "Tone?", "type": "text"}], "question 1: key is required"),
        (
            [{**TONE, "key": "Tone Of Voice"}],
            "question 1 ('Tone Of Voice'): key 'Tone Of Voice' must be a slug of lower-case "
            "letters, digits, '-' or '_' (at most 64 characters)",
        ),
        (
            [TONE, {**RATING, "key": "tone"}],
            "question 2 ('tone'): key 'tone' is already used by question 1",
        ),
        ([{**TONE, "prompt": "  "}], "question 1 ('tone'): prompt must be a non-empty string"),
        (
            [{**TONE, "type": "dropdown"}],
            "question 1 ('tone'): type must be one of single_choice, multiple_choice, rating, text",
        ),
        (
            [RATING, {**TONE, "options": None}],
            "question 2 ('tone'): options must be a list of at least two strings",
        ),
        (
            [RATING, {**TONE, "options": ["neutral"]}],
            "question 2 ('tone'): options must have at least two entries",
        ),
        (
            [{**TONE, "options": ["neutral", "neutral"]}],
            "question 1 ('tone'): options must be distinct",
        ),
        (
            [{**TONE, "options": ["neutral", ""]}],
            "question 1 ('tone'): options must all be non-empty strings",
        ),
        (
            [{**RATING, "scale": None}],
            "question 1 ('helpfulness'): scale must be an integer from 2 to 10 (rating 1..N)",
        ),
        (
            [{**RATING, "scale": 11}],
            "question 1 ('helpfulness'): scale must be an integer from 2 to 10 (rating 1..N)",
        ),
        (
            [{**RATING, "scale": 1}],
            "question 1 ('helpfulness'): scale must be an integer from 2 to 10 (rating 1..N)",
        ),
        (
            [{**RATING, "scale": True}],
            "question 1 ('helpfulness'): scale must be an integer from 2 to 10 (rating 1..N)",
        ),
        (
            [{"key": "notes", "prompt": "Notes", "type": "text", "options": ["a", "b"]}],
            "question 1 ('notes'): options are only allowed for single_choice and multiple_choice",
        ),
        ([{**TONE, "scale": 5}], "question 1 ('tone'): scale is only allowed for rating"),
        ([{**TONE, "required": "yes"}], "question 1 ('tone'): required must be true or false"),
        ([{**TONE, "colour": "red"}], "question 1 ('tone'): unknown field(s) 'colour'"),
    ],
)
def test_schema_errors_name_the_question(schema, message):
    assert message in schema_errors(schema)


def test_every_bad_question_is_reported_at_once():
    errors = schema_errors([{**TONE, "options": ["x"]}, RATING, {**RATING, "key": "", "scale": 0}])
    assert errors == [
        "question 1 ('tone'): options must have at least two entries",
        "question 3: key is required",
        "question 3: scale must be an integer from 2 to 10 (rating 1..N)",
    ]


# ---- Settings service ---------------------------------------------------------------------


def test_settings_update_saves_every_field(project):
    project_settings_update(
        project=project,
        review_modes=["label", "correct"],
        label_schema=VALID_SCHEMA,
        overlap=3,
        lease_seconds=900,
        blind=False,
    )
    project = Project.objects.get(pk=project.pk)
    assert project.review_modes == ["correct", "label"]  # canonical order
    assert project.label_schema[0]["key"] == "tone"
    assert (project.overlap, project.lease_seconds, project.blind) == (3, 900, False)


def test_settings_left_out_keep_their_value(project):
    project_settings_update(project=project, overlap=2)
    project_settings_update(project=project, blind=False)
    project = Project.objects.get(pk=project.pk)
    assert (project.overlap, project.blind, project.lease_seconds) == (2, False, 600)


@pytest.mark.parametrize(
    ("kwargs", "field", "message"),
    [
        (
            {"review_modes": []},
            "review_modes",
            "Choose at least one review mode: correct, compare or label.",
        ),
        (
            {"review_modes": ["correct", "vote"]},
            "review_modes",
            "Unknown review mode(s) 'vote'; use correct, compare, label.",
        ),
        (
            {"review_modes": ["label"], "label_schema": []},
            "label_schema",
            "The label review mode needs at least one question in the label schema.",
        ),
        ({"overlap": 0}, "overlap", "Overlap (k) must be between 1 and 50."),
        ({"overlap": 51}, "overlap", "Overlap (k) must be between 1 and 50."),
        ({"overlap": True}, "overlap", "Overlap (k) must be a whole number."),
        (
            {"lease_seconds": 59},
            "lease_seconds",
            "Lease length in seconds must be between 60 and 86400.",
        ),
        (
            {"lease_seconds": 86401},
            "lease_seconds",
            "Lease length in seconds must be between 60 and 86400.",
        ),
        ({"blind": "yes"}, "blind", "Blind mode must be true or false."),
    ],
)
def test_settings_errors_name_the_field(project, kwargs, field, message):
    with pytest.raises(ValidationError) as exc:
        project_settings_update(project=project, **kwargs)
    assert message in exc.value.message_dict[field]
    fresh = Project.objects.get(pk=project.pk)
    assert (fresh.overlap, fresh.review_modes) == (1, ["correct"])  # nothing saved


def test_label_mode_with_questions_is_accepted(project):
    project_settings_update(project=project, review_modes=["label"], label_schema=[RATING])
    assert Project.objects.get(pk=project.pk).review_modes == ["label"]


def test_overlap_can_go_down_while_no_reviews_exist(project):
    project_settings_update(project=project, overlap=5)
    project_settings_update(project=project, overlap=2)
    assert Project.objects.get(pk=project.pk).overlap == 2


def test_overlap_only_goes_up_once_a_review_was_submitted(project, personas):
    project_settings_update(project=project, overlap=3)
    add_submitted_review(project, item_add(project), personas["expert"])
    with pytest.raises(ValidationError) as exc:
        project_settings_update(project=project, overlap=2)
    assert exc.value.message_dict["overlap"] == [
        "Reviews already exist, so overlap (k) can only be raised: it is 3 now and cannot go "
        "down to 2."
    ]
    project_settings_update(project=project, overlap=3)  # unchanged is fine
    project_settings_update(project=project, overlap=4)
    assert Project.objects.get(pk=project.pk).overlap == 4


def test_overlap_only_goes_up_once_an_item_counts_a_review(project):
    project_settings_update(project=project, overlap=2)
    item_add(project).__class__.objects.filter(project=project).update(review_count=1)
    with pytest.raises(ValidationError):
        project_settings_update(project=project, overlap=1)


def test_raising_k_reopens_complete_items_for_more_reviews(project, personas):
    from curation.services.queue import queue_claim_next, queue_record_decision

    item = item_add(project)
    queue_claim_next(project=project, expert=personas["expert"])
    with transaction.atomic():
        queue_record_decision(item=item, expert=personas["expert"], counted=True)
    item.refresh_from_db()
    assert item.status == "complete"
    project_settings_update(project=project, overlap=2)
    item.refresh_from_db()
    assert item.status == "open"
    assert queue_claim_next(project=project, expert=personas["manager"]).item.pk == item.pk


# ---- Guidelines service -------------------------------------------------------------------


def test_guidelines_are_versioned_and_the_latest_is_current(project, personas):
    v1, created1 = guideline_publish(
        project=project, text="Be *kind*.", created_by=personas["manager"]
    )
    v2, created2 = guideline_publish(
        project=project, text="Be *brief*.", created_by=personas["admin"]
    )
    assert (v1.version, created1, v2.version, created2) == (1, True, 2, True)
    assert selectors.guideline_current(project=project) == v2
    assert GuidelineVersion.objects.get(pk=v1.pk).text == "Be *kind*."  # v1 never rewritten
    assert [v.version for v in selectors.guideline_list(project=project)] == [2, 1]


def test_unchanged_guidelines_make_no_new_version(project, personas):
    v1, _ = guideline_publish(project=project, text="Rule one.\n", created_by=personas["manager"])
    again, created = guideline_publish(
        project=project, text="Rule one.   \r\n\r\n", created_by=personas["manager"]
    )
    assert (again, created) == (v1, False)
    assert GuidelineVersion.objects.filter(project=project).count() == 1


def test_empty_guidelines_are_refused(project, personas):
    with pytest.raises(ValidationError) as exc:
        guideline_publish(project=project, text=" \n ", created_by=personas["manager"])
    assert exc.value.message_dict == {"text": ["Guidelines cannot be empty."]}


def test_guideline_versions_are_numbered_per_project(project, personas):
    from tests.factories import ProjectFactory

    other = ProjectFactory()
    guideline_publish(project=project, text="A", created_by=personas["manager"])
    version, _ = guideline_publish(project=other, text="B", created_by=personas["manager"])
    assert version.version == 1


# ---- Markdown rendering -------------------------------------------------------------------


def test_markdown_renders_formatting():
    html = render_markdown("# Title\n\n- **bold** [docs](https://example.org)")
    assert "<h1>Title</h1>" in html
    assert "<strong>bold</strong>" in html
    assert '<a href="https://example.org" rel="noopener noreferrer nofollow">docs</a>' in html


@pytest.mark.parametrize(
    ("source", "forbidden", "expected"),
    [
        ("<script>alert(1)</script>", "<script", "&lt;script&gt;alert(1)&lt;/script&gt;"),
        ("<img src=x onerror=alert(1)>", "<img", "&lt;img src=x onerror=alert(1)&gt;"),
        ("x <b onclick=alert(1)>y</b>", "<b ", "&lt;b onclick=alert(1)&gt;"),
        ('<div hx-get="/x" hx-trigger="load">', "<div", "&lt;div hx-get="),
        ("[click](javascript:alert(1))", "javascript:", "click</a>"),
        ('<a href="javascript:alert(1)">x</a>', "<a href", "&lt;a href="),
        ("```\n<script>x</script>\n```", "<script", "&lt;script&gt;x&lt;/script&gt;"),
    ],
)
def test_markdown_cannot_inject_html(source, forbidden, expected):
    html = render_markdown(source)
    assert forbidden not in html
    assert expected in html


# ---- Settings page ------------------------------------------------------------------------


def settings_url(project):
    return reverse("curation:project_settings", args=[project.slug])


def guidelines_url(project):
    return reverse("curation:project_guidelines", args=[project.slug])


SETTINGS_POST = {
    "review_modes": ["correct", "compare"],
    "label_schema": "",
    "overlap": "2",
    "lease_minutes": "15",
    "blind": "on",
    "outcome_rule": "majority",
}


@pytest.mark.parametrize(
    ("persona", "status"),
    [("expert", 403), ("manager", 200), ("admin", 200), ("outsider", 404)],
)
def test_settings_page_by_persona(personas, project, client_for, persona, status):
    response = client_for(personas[persona]).get(settings_url(project))
    assert response.status_code == status
    if status == 200:
        assert b"Label schema format and an example" in response.content
        assert b'"type": "single_choice"' not in response.content  # shown escaped
        assert b"&quot;type&quot;: &quot;single_choice&quot;" in response.content


@pytest.mark.parametrize(
    ("persona", "status"),
    [("expert", 403), ("manager", 302), ("admin", 302), ("outsider", 404)],
)
def test_settings_save_by_persona(personas, project, client_for, persona, status):
    response = client_for(personas[persona]).post(settings_url(project), SETTINGS_POST)
    assert response.status_code == status
    project = Project.objects.get(pk=project.pk)
    if status == 302:
        assert response["Location"] == settings_url(project)
        assert project.review_modes == ["correct", "compare"]
        assert (project.overlap, project.lease_seconds, project.blind) == (2, 900, True)
    else:
        assert project.overlap == 1


def test_settings_page_rejects_other_methods_and_enforces_csrf(personas, project, client_for):
    c = client_for(personas["manager"])
    assert c.put(settings_url(project)).status_code == 405
    assert c.delete(settings_url(project)).status_code == 405
    strict = client_for(personas["manager"], enforce_csrf=True)
    assert strict.post(settings_url(project), SETTINGS_POST).status_code == 403
    assert Project.objects.get(pk=project.pk).overlap == 1


def test_settings_page_saves_a_label_schema_given_as_json(personas, project, client_for):
    import json

    post = {**SETTINGS_POST, "review_modes": ["label"], "label_schema": json.dumps([RATING])}
    response = client_for(personas["manager"]).post(settings_url(project), post, follow=True)
    assert b"Settings saved." in response.content
    assert Project.objects.get(pk=project.pk).label_schema == [{**RATING, "required": False}]
    # shown back as JSON in the textarea
    assert b"&quot;helpfulness&quot;" in response.content


def test_settings_page_reports_bad_json(personas, project, client_for):
    post = {**SETTINGS_POST, "label_schema": '[{"key": "tone",]'}
    response = client_for(personas["manager"]).post(settings_url(project), post)
    assert response.status_code == 400
    assert b"Not valid JSON: Expecting property name enclosed in double quotes" in response.content


def test_settings_page_reports_the_bad_question(personas, project, client_for):
    import json

    post = {
        **SETTINGS_POST,
        "review_modes": ["label"],
        "label_schema": json.dumps([RATING, {**TONE, "options": ["x"]}]),
    }
    response = client_for(personas["manager"]).post(settings_url(project), post)
    assert response.status_code == 400
    assert (
        b"question 2 (&#x27;tone&#x27;): options must have at least two entries" in response.content
    )
    assert Project.objects.get(pk=project.pk).review_modes == ["correct"]


def test_settings_page_refuses_lowering_k_after_reviews(personas, project, client_for):
    project_settings_update(project=project, overlap=3)
    add_submitted_review(project, item_add(project), personas["expert"])
    c = client_for(personas["manager"])
    assert b"k can only be raised" in c.get(settings_url(project)).content
    response = c.post(settings_url(project), {**SETTINGS_POST, "overlap": "1"})
    assert response.status_code == 400
    assert b"Reviews already exist, so overlap (k) can only be raised" in response.content
    assert Project.objects.get(pk=project.pk).overlap == 3


@pytest.mark.parametrize(
    ("minutes", "ok"), [("0", False), ("1", True), ("1440", True), ("1441", False)]
)
def test_settings_page_lease_is_in_minutes_up_to_a_day(personas, project, client_for, minutes, ok):
    response = client_for(personas["manager"]).post(
        settings_url(project), {**SETTINGS_POST, "lease_minutes": minutes}
    )
    assert response.status_code == (302 if ok else 400)
    if ok:
        assert Project.objects.get(pk=project.pk).lease_seconds == int(minutes) * 60


# ---- Guidelines page ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("persona", "status"),
    [("expert", 200), ("manager", 200), ("admin", 200), ("outsider", 404)],
)
def test_guidelines_page_by_persona(personas, project, client_for, persona, status):
    guideline_publish(project=project, text="Check **facts**.", created_by=personas["manager"])
    response = client_for(personas[persona]).get(guidelines_url(project))
    assert response.status_code == status
    if status == 200:
        assert b"<strong>facts</strong>" in response.content
        has_form = b"Publish a new version" in response.content
        assert has_form is (persona != "expert")


@pytest.mark.parametrize(
    ("persona", "status"),
    [("expert", 403), ("manager", 302), ("admin", 302), ("outsider", 404)],
)
def test_guidelines_publish_by_persona(personas, project, client_for, persona, status):
    response = client_for(personas[persona]).post(guidelines_url(project), {"text": "New rules"})
    assert response.status_code == status
    versions = GuidelineVersion.objects.filter(project=project)
    assert versions.count() == (1 if status == 302 else 0)
    if status == 302:
        assert versions.get().created_by == personas[persona]


def test_guidelines_page_rejects_other_methods_and_enforces_csrf(personas, project, client_for):
    c = client_for(personas["manager"])
    assert c.put(guidelines_url(project)).status_code == 405
    assert c.patch(guidelines_url(project)).status_code == 405
    strict = client_for(personas["manager"], enforce_csrf=True)
    assert strict.post(guidelines_url(project), {"text": "x"}).status_code == 403
    assert not GuidelineVersion.objects.filter(project=project).exists()


def test_guidelines_page_shows_history_and_older_versions(personas, project, client_for):
    for text in ("First rules", "Second rules", "Third rules"):
        guideline_publish(project=project, text=text, created_by=personas["manager"])
    c = client_for(personas["expert"])
    page = c.get(guidelines_url(project)).content.decode()
    assert "Third rules" in page and "Version 3" in page
    assert 'href="?version=1"' in page and 'href="?version=2"' in page
    old = c.get(guidelines_url(project) + "?version=1").content.decode()
    assert "First rules" in old and "older version" in old
    assert c.get(guidelines_url(project) + "?version=9").status_code == 404
    assert c.get(guidelines_url(project) + "?version=x").status_code == 404


def test_guidelines_page_escapes_html_in_markdown(personas, project, client_for):
    guideline_publish(
        project=project,
        text="Rules <script>window.__pwned=1</script> and <img src=x onerror=alert(1)>",
        created_by=personas["manager"],
    )
    page = client_for(personas["expert"]).get(guidelines_url(project)).content.decode()
    assert "<script>window.__pwned" not in page
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in page
    assert "<img src=x" not in page
    assert "hx-disable" in page


def test_publishing_unchanged_text_says_so(personas, project, client_for):
    c = client_for(personas["manager"])
    c.post(guidelines_url(project), {"text": "Same"})
    response = c.post(guidelines_url(project), {"text": "Same"}, follow=True)
    assert b"No change: version 1 already has this text." in response.content
    assert GuidelineVersion.objects.filter(project=project).count() == 1


def test_publishing_empty_guidelines_shows_the_error(personas, project, client_for):
    response = client_for(personas["manager"]).post(guidelines_url(project), {"text": "   "})
    assert response.status_code == 400
    assert b"Guidelines cannot be empty." in response.content


def test_project_page_links_managers_to_settings_items_and_guidelines(
    personas, project, client_for
):
    url = reverse("curation:project_detail", args=[project.slug])
    manager_page = client_for(personas["manager"]).get(url).content.decode()
    for target in (settings_url(project), guidelines_url(project)):
        assert f'href="{target}"' in manager_page
    assert f'href="{reverse("curation:item_list", args=[project.slug])}"' in manager_page
    expert_page = client_for(personas["expert"]).get(url).content.decode()
    assert f'href="{guidelines_url(project)}"' in expert_page
    assert settings_url(project) not in expert_page


def test_settings_and_guidelines_pages_have_bounded_queries(
    personas, project, client_for, django_assert_max_num_queries
):
    for n in range(10):
        guideline_publish(project=project, text=f"v{n}", created_by=personas["manager"])
    c = client_for(personas["manager"])
    with django_assert_max_num_queries(8):
        assert c.get(guidelines_url(project)).status_code == 200
    with django_assert_max_num_queries(8):
        assert c.get(settings_url(project)).status_code == 200


# ---- API ----------------------------------------------------------------------------------


def api_settings_url(project):
    return f"/api/v1/projects/{project.slug}/settings/"


def api_guidelines_url(project):
    return f"/api/v1/projects/{project.slug}/guidelines/"


@pytest.mark.parametrize(
    ("persona", "status"),
    [("expert", 200), ("manager", 200), ("admin", 200), ("outsider", 404)],
)
def test_settings_api_read_by_persona(personas, project, api_for, persona, status):
    response = api_for(personas[persona]).get(api_settings_url(project))
    assert response.status_code == status
    if status == 200:
        assert response.json() == {
            "review_modes": ["correct"],
            "label_schema": [],
            "overlap": 1,
            "lease_seconds": 600,
            "blind": True,
            "outcome_rule": "unanimous",
            "ingest_sample_fraction": 0.1,
            "ingest_low_confidence_first": True,
            "updated_at": response.json()["updated_at"],
        }


@pytest.mark.parametrize(
    ("persona", "status"),
    [("expert", 403), ("manager", 200), ("admin", 200), ("outsider", 404)],
)
def test_settings_api_update_by_persona(personas, project, api_for, persona, status):
    response = api_for(personas[persona]).patch(
        api_settings_url(project),
        {"overlap": 3, "review_modes": ["label"], "label_schema": [TONE]},
        format="json",
    )
    assert response.status_code == status
    overlap = Project.objects.get(pk=project.pk).overlap
    if status == 200:
        assert response.json()["overlap"] == 3 == overlap
        assert response.json()["label_schema"] == [TONE]
    else:
        assert overlap == 1


def test_settings_api_rejects_other_methods(personas, project, api_for):
    c = api_for(personas["manager"])
    assert c.post(api_settings_url(project), {}, format="json").status_code == 405
    assert c.put(api_settings_url(project), {}, format="json").status_code == 405
    assert c.delete(api_settings_url(project)).status_code == 405


def test_settings_api_enforces_csrf_for_session_users(personas, project):
    c = Client(enforce_csrf_checks=True)
    c.force_login(personas["manager"])
    response = c.patch(api_settings_url(project), {"overlap": 4}, content_type="application/json")
    assert response.status_code == 403
    assert Project.objects.get(pk=project.pk).overlap == 1


def test_settings_api_needs_authentication(project):
    assert Client().get(api_settings_url(project)).status_code == 401


def test_settings_api_reports_the_bad_question(personas, project, api_for):
    response = api_for(personas["manager"]).patch(
        api_settings_url(project),
        {"label_schema": [TONE, {**RATING, "scale": 12}]},
        format="json",
    )
    assert response.status_code == 400
    assert response.json() == {
        "label_schema": [
            "question 2 ('helpfulness'): scale must be an integer from 2 to 10 (rating 1..N)"
        ]
    }


def test_settings_api_refuses_lowering_k_after_reviews(personas, project, api_for):
    project_settings_update(project=project, overlap=2)
    add_submitted_review(project, item_add(project), personas["expert"])
    response = api_for(personas["manager"]).patch(
        api_settings_url(project), {"overlap": 1}, format="json"
    )
    assert response.status_code == 400
    assert "can only be raised" in response.json()["overlap"][0]


@pytest.mark.parametrize(
    ("persona", "status"),
    [("expert", 200), ("manager", 200), ("admin", 200), ("outsider", 404)],
)
def test_guidelines_api_read_by_persona(personas, project, api_for, persona, status):
    guideline_publish(project=project, text="Old", created_by=personas["manager"])
    guideline_publish(project=project, text="<b>x</b> *y*", created_by=personas["manager"])
    response = api_for(personas[persona]).get(api_guidelines_url(project))
    assert response.status_code == status
    if status == 200:
        body = response.json()
        assert body["current"]["version"] == 2
        assert body["current"]["text"] == "<b>x</b> *y*"
        assert body["current"]["html"] == "<p>&lt;b&gt;x&lt;/b&gt; <em>y</em></p>"
        assert [v["version"] for v in body["versions"]] == [2, 1]


def test_guidelines_api_before_any_version(personas, project, api_for):
    body = api_for(personas["expert"]).get(api_guidelines_url(project)).json()
    assert body == {"current": None, "versions": []}


@pytest.mark.parametrize(
    ("persona", "status"),
    [("expert", 403), ("manager", 201), ("admin", 201), ("outsider", 404)],
)
def test_guidelines_api_publish_by_persona(personas, project, api_for, persona, status):
    response = api_for(personas[persona]).post(
        api_guidelines_url(project), {"text": "Cite sources."}, format="json"
    )
    assert response.status_code == status
    if status == 201:
        assert response.json()["version"] == 1
        assert response.json()["created_by"] == personas[persona].username
    assert GuidelineVersion.objects.filter(project=project).exists() is (status == 201)


def test_guidelines_api_unchanged_text_answers_200_with_the_current_version(
    personas, project, api_for
):
    c = api_for(personas["manager"])
    assert c.post(api_guidelines_url(project), {"text": "A"}, format="json").status_code == 201
    again = c.post(api_guidelines_url(project), {"text": "A\n"}, format="json")
    assert again.status_code == 200
    assert again.json()["version"] == 1


def test_guidelines_api_rejects_other_methods_and_empty_text(personas, project, api_for):
    c = api_for(personas["manager"])
    assert c.put(api_guidelines_url(project), {}, format="json").status_code == 405
    assert c.delete(api_guidelines_url(project)).status_code == 405
    response = c.post(api_guidelines_url(project), {"text": ""}, format="json")
    assert response.status_code == 400
    assert response.json() == {"text": ["Guidelines cannot be empty."]}


def test_guidelines_api_enforces_csrf_for_session_users(personas, project):
    c = Client(enforce_csrf_checks=True)
    c.force_login(personas["manager"])
    response = c.post(api_guidelines_url(project), {"text": "x"}, content_type="application/json")
    assert response.status_code == 403
    assert not GuidelineVersion.objects.filter(project=project).exists()


def test_outcome_rule_is_saved_and_a_bad_one_named(project, personas):
    updated = project_settings_update(project=project, outcome_rule="majority")
    assert updated.outcome_rule == "majority"
    project.refresh_from_db()
    assert project.outcome_rule == "majority"
    with pytest.raises(ValidationError) as exc:
        project_settings_update(project=project, outcome_rule="dictator")
    assert "unanimous, majority" in exc.value.message_dict["outcome_rule"][0]


def test_settings_api_sets_the_outcome_rule(personas, project, api_for):
    response = api_for(personas["manager"]).patch(
        api_settings_url(project), {"outcome_rule": "majority"}, format="json"
    )
    assert response.status_code == 200, response.content
    assert response.json()["outcome_rule"] == "majority"
    response = api_for(personas["manager"]).patch(
        api_settings_url(project), {"outcome_rule": "nope"}, format="json"
    )
    assert response.status_code == 400 and "outcome_rule" in response.json()
