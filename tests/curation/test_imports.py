"""Imports: formats, every bad-input case, idempotency, entry points and the persona matrix."""

from __future__ import annotations

import io
import json
import threading
import time
import tracemalloc
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.urls import reverse

from curation.models import Candidate, ImportJob, ImportStatus, Item
from curation.services import imports as services

DATA = Path(__file__).parent / "data"

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _storage(settings, tmp_path):
    settings.STORAGE_DIR = tmp_path / "storage"


def run_file(project, user, tmp_path, content, *, name="items.jsonl", format=""):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    job = services.import_job_create(
        project=project, created_by=user, filename=name, format=format, path=path
    )
    return services.import_job_run(job_id=job.pk)


def line(**fields) -> str:
    return json.dumps(fields)


GOOD = {"external_id": "x", "prompt": "Question?", "output": "Answer."}


def jsonl(*objects) -> str:
    return "".join((o if isinstance(o, str) else json.dumps(o)) + "\n" for o in objects)


def db_state():
    return (Item.objects.count(), Candidate.objects.count())


# ---- Formats ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["items.jsonl", "items.csv", "items.json"])
def test_each_format_imports_items_candidates_metadata_and_messages(
    personas, project, tmp_path, name
):
    job = run_file(project, personas["manager"], tmp_path, (DATA / name).read_bytes(), name=name)
    assert job.status == ImportStatus.SUCCEEDED, job.errors
    assert (job.imported_count, job.skipped_count, job.error_count) == (3, 0, 0)
    items = {i.external_id: i for i in Item.objects.filter(project=project)}
    assert set(items) == {"a1", "a2", "3"}
    a1 = items["a1"]
    assert a1.prompt == "How do I reset my password?"
    assert a1.messages is None
    assert a1.metadata["channel"] == "email"
    assert a1.source == "import" and a1.import_job_id == job.pk and a1.status == "open"
    assert [(c.output, c.model) for c in a1.candidates.all()] == [("Use the reset link.", "gpt-x")]
    a2 = items["a2"]
    if name == "items.csv":
        assert a2.prompt == "Refund?\n(two lines)"
        assert a2.metadata == {}
    else:
        assert a2.prompt == ""
        assert a2.messages == [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Refund?"},
        ]
        assert [(c.position, c.output, c.model) for c in a2.candidates.order_by("position")] == [
            (0, "Within 14 days.", "m1"),
            (1, "No refunds.", "m2"),
        ]
        assert a1.priority == 3
    assert items["3"].candidates.get().model == ""


def test_reimporting_the_same_file_imports_nothing_and_reports_skips(personas, project, tmp_path):
    content = (DATA / "items.jsonl").read_bytes()
    first = run_file(project, personas["manager"], tmp_path, content)
    before = db_state()
    again = run_file(project, personas["manager"], tmp_path, content)
    assert again.status == ImportStatus.SUCCEEDED
    assert (again.imported_count, again.skipped_count) == (0, 3)
    assert db_state() == before
    assert "skipped 3" in again.message
    assert first.imported_count == 3


def test_a_partly_new_file_imports_only_the_new_items_with_their_candidates(
    personas, project, tmp_path
):
    run_file(project, personas["manager"], tmp_path, jsonl(GOOD))
    job = run_file(
        project,
        personas["manager"],
        tmp_path,
        jsonl({**GOOD, "output": "changed"}, {**GOOD, "external_id": "y"}),
    )
    assert (job.imported_count, job.skipped_count) == (1, 1)
    assert Item.objects.get(external_id="x").candidates.get().output == "Answer."
    assert Item.objects.get(external_id="y").candidates.count() == 1


def test_same_external_id_in_another_project_is_not_a_conflict(personas, project, tmp_path):
    from tests.factories import ProjectFactory

    other = ProjectFactory()
    run_file(other, personas["admin"], tmp_path, jsonl(GOOD))
    job = run_file(project, personas["manager"], tmp_path, jsonl(GOOD))
    assert job.imported_count == 1


def test_blank_lines_and_a_byte_order_mark_are_accepted(personas, project, tmp_path):
    content = b"\xef\xbb\xbf" + jsonl(GOOD).encode() + b"\n   \n"
    job = run_file(project, personas["manager"], tmp_path, content)
    assert job.status == ImportStatus.SUCCEEDED and job.imported_count == 1


def test_integer_external_ids_are_stored_as_text(personas, project, tmp_path):
    job = run_file(project, personas["manager"], tmp_path, jsonl({**GOOD, "external_id": 42}))
    assert job.status == ImportStatus.SUCCEEDED
    assert Item.objects.filter(external_id="42").exists()


def test_progress_fields_are_filled_in(personas, project, tmp_path):
    job = run_file(project, personas["manager"], tmp_path, jsonl(GOOD, {**GOOD, "external_id": 2}))
    assert job.lines_total == 2 and job.lines_done == 2
    assert job.started_at and job.finished_at and job.finished_at >= job.started_at


# ---- Bad input ----------------------------------------------------------------------------

BAD_CASES = {
    "empty file": ("", [(0, "", "The file is empty")]),
    "only blank lines": ("\n\n  \n", [(0, "", "The file is empty")]),
    "not utf-8": (
        jsonl(GOOD).encode() + b'{"external_id": "\xff\xfe"}\n',
        [(2, "", "Not valid UTF-8")],
    ),
    "not json": (jsonl(GOOD) + "{not json\n", [(2, "", "Not valid JSON")]),
    "line not an object": (jsonl(GOOD, [1, 2]), [(2, "", "Expected a JSON object, got an array")]),
    "missing prompt and messages": (
        jsonl({"external_id": "x", "output": "A"}),
        [(1, "prompt", "Missing prompt or messages")],
    ),
    "both prompt and messages": (
        jsonl({**GOOD, "messages": [{"role": "user", "content": "Q"}]}),
        [(1, "messages", "either prompt or messages, not both")],
    ),
    "bad message role": (
        jsonl(
            {
                "external_id": "x",
                "messages": [{"role": "user", "content": "Q"}, {"role": "robot", "content": "A"}],
                "output": "A",
            }
        ),
        [(1, "messages[1].role", "Unknown role 'robot'")],
    ),
    "message without content": (
        jsonl({"external_id": "x", "messages": [{"role": "user"}], "output": "A"}),
        [(1, "messages[0].content", "Must be a string, got null")],
    ),
    "empty output": (jsonl({**GOOD, "output": "   "}), [(1, "output", "Must not be empty")]),
    "empty candidate output": (
        jsonl(
            {
                "external_id": "x",
                "prompt": "Q",
                "candidates": [{"output": "ok", "model": "a"}, {"output": "", "model": "b"}],
            }
        ),
        [(1, "candidates[1].output", "Must not be empty")],
    ),
    "missing output": (
        jsonl({"external_id": "x", "prompt": "Q"}),
        [(1, "output", "Missing output or candidates")],
    ),
    "both output and candidates": (
        jsonl({**GOOD, "candidates": [{"output": "A"}]}),
        [(1, "candidates", "not both")],
    ),
    "missing external_id": (
        jsonl({"prompt": "Q", "output": "A"}),
        [(1, "external_id", "Missing external_id")],
    ),
    "wrong types": (
        jsonl(
            {
                "external_id": ["x"],
                "prompt": 5,
                "output": "A",
                "model": 7,
                "metadata": [1],
                "priority": "high",
            }
        ),
        [
            (1, "external_id", "Must be a string, got an array"),
            (1, "prompt", "Must be a string, got a number"),
            (1, "model", "Must be a string, got a number"),
            (1, "metadata", "Must be an object, got an array"),
            (1, "priority", "Must be an integer, got a string"),
        ],
    ),
    "messages not a list": (
        jsonl({"external_id": "x", "messages": "hi", "output": "A"}),
        [(1, "messages", "Must be a list of messages, got a string")],
    ),
    "candidates not a list": (
        jsonl({"external_id": "x", "prompt": "Q", "candidates": {"output": "A"}}),
        [(1, "candidates", "Must be a list of candidates, got an object")],
    ),
    "duplicate external_id": (
        jsonl(GOOD, {**GOOD, "external_id": "y"}, GOOD),
        [(3, "external_id", "Duplicate external_id 'x' (first on line 1)")],
    ),
    "NUL character": (jsonl({**GOOD, "output": "a\u0000b"}), [(1, "output", "NUL")]),
    "NUL character in an ignored-for-checks place": (
        jsonl({**GOOD, "metadata": {"k": "a\u0000b"}}),
        [(1, "metadata", "NUL")],
    ),
    "NaN in metadata": (
        jsonl(GOOD).replace('."}', '.", "metadata": {"score": NaN}}'),
        [(1, "metadata", "NaN and Infinity are not JSON numbers")],
    ),
    "line over 1 MiB": (
        jsonl(GOOD, {**GOOD, "external_id": "big", "output": "x" * (1024 * 1024)}, GOOD).replace(
            '"x", "prompt"', '"z", "prompt"', 1
        ),
        [(2, "", "longer than the 1 MiB limit")],
    ),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_input_is_reported_precisely_and_nothing_is_imported(personas, project, tmp_path, case):
    content, expected = BAD_CASES[case]
    before = db_state()
    job = run_file(project, personas["manager"], tmp_path, content)
    assert job.status == ImportStatus.FAILED
    assert db_state() == before
    assert job.imported_count == 0
    assert job.error_count == len(expected), job.errors
    for (want_line, want_field, want_text), got in zip(expected, job.errors, strict=True):
        assert got["line"] == want_line, got
        assert got["field"] == want_field, got
        assert want_text in got["message"], got
    assert "nothing was imported" in job.message


FAST_PATH_OBJECTS = [
    GOOD,
    {"external_id": 7, "prompt": "Q", "output": "A", "model": None, "priority": -3},
    {"external_id": "m", "messages": [{"content": "Q", "role": "user"}], "output": "A"},
    # a message with an extra key: the careful path drops the key, the fast path defers
    {"external_id": "m2", "messages": [{"role": "user", "content": "", "x": 1}], "output": "A"},
    {"external_id": "c", "prompt": "Q", "candidates": [{"output": 'é " \\', "model": "a"}]},
    {"external_id": "u", "prompt": "Q\ud800", "output": "A"},
    {"external_id": "big", "prompt": "Q", "output": "A", "priority": 2**31},
    {**GOOD, "metadata": {"nested": [1, 2.5, None, True, "ü"]}},
    {**GOOD, "metadata": {"x": float("inf")}},
]


@pytest.mark.parametrize("clean", [True, False])
@pytest.mark.parametrize("obj", FAST_PATH_OBJECTS)
def test_the_fast_path_stages_what_the_careful_path_would(obj, clean):
    """_fast_row either defers (None) or gives exactly the row _validate would."""
    if clean and "\\u" in json.dumps(obj):
        pytest.skip("the reader calls a line clean only when it holds no \\u escape")
    errors = services._Errors()
    careful = services._validate(obj, 3, errors)
    fast = services._fast_row(obj, 3, clean)
    if careful is None:  # a refused object never slips through the fast path
        assert fast is None
    elif fast is not None:
        assert fast == careful
    assert (careful is None) == bool(errors)


def test_one_bad_line_among_good_ones_imports_nothing(personas, project, tmp_path):
    good = [{**GOOD, "external_id": f"id-{n}"} for n in range(50)]
    content = jsonl(*good[:30], {"external_id": "bad", "prompt": "Q"}, *good[30:])
    job = run_file(project, personas["manager"], tmp_path, content)
    assert job.status == ImportStatus.FAILED
    assert job.errors == [
        {
            "line": 31,
            "field": "output",
            "message": "Missing output or candidates: give one of them.",
        }
    ]
    assert Item.objects.count() == 0


def test_only_the_first_100_errors_are_kept_with_the_total_count(personas, project, tmp_path):
    content = jsonl(*[{"external_id": f"e{n}", "prompt": "Q"} for n in range(250)])
    job = run_file(project, personas["manager"], tmp_path, content)
    assert job.error_count == 250
    assert len(job.errors) == 100
    assert [e["line"] for e in job.errors] == list(range(1, 101))


def test_duplicates_and_line_errors_are_reported_together_in_line_order(
    personas, project, tmp_path
):
    content = jsonl(GOOD, "nope", GOOD)
    job = run_file(project, personas["manager"], tmp_path, content)
    assert [(e["line"], e["field"]) for e in job.errors] == [(2, ""), (3, "external_id")]
    assert job.error_count == 2


def test_a_file_over_the_configured_maximum_is_refused(personas, project, tmp_path, settings):
    settings.REDLINE_IMPORT_MAX_BYTES = 100
    path = tmp_path / "big.jsonl"
    path.write_text(jsonl(*[{**GOOD, "external_id": n} for n in range(10)]))
    with pytest.raises(Exception, match="larger than the 100 bytes limit"):
        services.import_job_create(
            project=project, created_by=personas["manager"], filename="big.jsonl", path=path
        )
    # A file that grows past the limit after it was accepted is stopped while streaming.
    path.write_text(jsonl(GOOD))
    job = services.import_job_create(
        project=project, created_by=personas["manager"], filename="big.jsonl", path=path
    )
    path.write_text(jsonl(*[{**GOOD, "external_id": n} for n in range(10)]))
    job = services.import_job_run(job_id=job.pk)
    assert job.status == ImportStatus.FAILED
    assert job.errors[0]["line"] == 0 and "limit" in job.errors[0]["message"]
    assert Item.objects.count() == 0


def test_an_upload_over_the_maximum_is_refused_while_streaming(personas, project, settings):
    settings.REDLINE_IMPORT_MAX_BYTES = 1000
    chunks = (b"x" * 400 for _ in range(10))
    with pytest.raises(Exception, match="limit"):
        services.import_job_create(
            project=project,
            created_by=personas["manager"],
            filename="a.jsonl",
            chunks=chunks,
        )
    assert ImportJob.objects.count() == 0
    assert not list((settings.STORAGE_DIR / "imports").glob("*"))


CSV_BAD = {
    "unknown column": (
        "external_id,prompt,output,colour\n1,Q,A,red\n",
        [(1, "colour", "Unknown column 'colour'")],
    ),
    "missing column": ("external_id,prompt\n1,Q\n", [(1, "output", "Missing column 'output'")]),
    "bad metadata json": (
        'external_id,prompt,output,metadata\n1,Q,A,"{bad"\n',
        [(2, "metadata", "Not valid JSON")],
    ),
    "metadata not an object": (
        "external_id,prompt,output,metadata\n1,Q,A,[1]\n",
        [(2, "metadata", "Must be an object")],
    ),
    "empty output": ("external_id,prompt,output\n1,Q,\n", [(2, "output", "Must not be empty")]),
    "wrong column count": ("external_id,prompt,output\n1,Q,A,extra\n", [(2, "", "Expected 3")]),
    "not utf-8": (b"external_id,prompt,output\n1,Q\xff,A\n", [(2, "", "Not valid UTF-8")]),
    "duplicate": (
        "external_id,prompt,output\n1,Q,A\n2,Q,A\n1,Q,A\n",
        [(4, "external_id", "Duplicate external_id '1' (first on line 2)")],
    ),
    "header only": ("external_id,prompt,output\n", [(0, "", "empty")]),
}


@pytest.mark.parametrize("case", list(CSV_BAD))
def test_bad_csv_is_reported_precisely(personas, project, tmp_path, case):
    content, expected = CSV_BAD[case]
    job = run_file(project, personas["manager"], tmp_path, content, name="items.csv")
    assert job.status == ImportStatus.FAILED
    assert [(e["line"], e["field"]) for e in job.errors] == [(w[0], w[1]) for w in expected]
    for (_, _, text), got in zip(expected, job.errors, strict=True):
        assert text in got["message"], got
    assert Item.objects.count() == 0


JSON_BAD = {
    "not an array": ('{"items": []}', [(1, "", "must be a JSON array")]),
    "broken json": ('[{"external_id": "a", "prompt": "Q", "output": "A"}, {"x": ]', [(2, "", "")]),
    "element not an object": (
        '[{"external_id": "a", "prompt": "Q", "output": "A"}, "oops"]',
        [(2, "", "Expected a JSON object, got a string")],
    ),
    "empty array": ("[]", [(0, "", "empty")]),
    "not utf-8": (b'[{"external_id": "\xff"}]', [(1, "", "Not valid UTF-8")]),
}


@pytest.mark.parametrize("case", list(JSON_BAD))
def test_bad_json_array_is_reported_precisely(personas, project, tmp_path, case):
    content, expected = JSON_BAD[case]
    job = run_file(project, personas["manager"], tmp_path, content, name="items.json")
    assert job.status == ImportStatus.FAILED
    assert [(e["line"], e["field"]) for e in job.errors] == [(w[0], w[1]) for w in expected]
    for (_, _, text), got in zip(expected, job.errors, strict=True):
        assert text in got["message"], got
    assert Item.objects.count() == 0


def test_format_is_detected_from_the_extension_or_chosen():
    assert services.import_format_detect(filename="a.JSONL") == "jsonl"
    assert services.import_format_detect(filename="a.ndjson") == "jsonl"
    assert services.import_format_detect(filename="a.csv") == "csv"
    assert services.import_format_detect(filename="a.json") == "json"
    assert services.import_format_detect(filename="a.txt", format="csv") == "csv"
    with pytest.raises(Exception, match="Cannot tell the format"):
        services.import_format_detect(filename="a.txt")


def test_running_a_job_twice_runs_it_once(personas, project, tmp_path):
    job = run_file(project, personas["manager"], tmp_path, jsonl(GOOD))
    assert services.import_job_run(job_id=job.pk) is None
    assert services.import_job_run(job_id=987654) is None
    assert Item.objects.count() == 1


def test_an_uploaded_file_is_deleted_after_success(personas, project, settings):
    job = services.import_job_create(
        project=project,
        created_by=personas["manager"],
        filename="upload.jsonl",
        chunks=iter([jsonl(GOOD).encode()]),
    )
    stored = settings.STORAGE_DIR / job.path
    assert stored == settings.STORAGE_DIR / "imports" / f"{job.pk}.jsonl" and stored.exists()
    services.import_job_run(job_id=job.pk)
    assert not stored.exists()


# ---- UI -----------------------------------------------------------------------------------

ROLE_MATRIX = [("expert", 403), ("manager", 200), ("admin", 200), ("outsider", 404)]


def upload(name: str, content: str) -> io.BytesIO:
    f = io.BytesIO(content.encode())
    f.name = name
    return f


@pytest.mark.parametrize(("persona", "status"), ROLE_MATRIX)
def test_import_page_by_persona(personas, project, client_for, persona, status):
    url = reverse("curation:import_page", args=[project.slug])
    assert client_for(personas[persona]).get(url).status_code == status


@pytest.mark.parametrize(("persona", "status"), ROLE_MATRIX)
def test_upload_by_persona(personas, project, client_for, persona, status, settings):
    url = reverse("curation:import_page", args=[project.slug])
    response = client_for(personas[persona]).post(url, {"file": upload("a.jsonl", jsonl(GOOD))})
    expected = 302 if status == 200 else status
    assert response.status_code == expected
    assert ImportJob.objects.exists() is (expected == 302)


@pytest.mark.parametrize(("persona", "status"), ROLE_MATRIX)
def test_import_detail_and_progress_by_persona(personas, project, client_for, persona, status):
    job = services.import_job_create(
        project=project,
        created_by=personas["manager"],
        filename="a.jsonl",
        chunks=iter([b"{}"]),
    )
    c = client_for(personas[persona])
    for name in ("curation:import_detail", "curation:import_progress"):
        assert c.get(reverse(name, args=[project.slug, job.pk])).status_code == status


def test_import_pages_refuse_wrong_methods_and_enforce_csrf(personas, project, client_for):
    c = client_for(personas["manager"])
    page = reverse("curation:import_page", args=[project.slug])
    assert c.put(page).status_code == 405
    assert c.delete(page).status_code == 405
    job = services.import_job_create(
        project=project, created_by=personas["manager"], filename="a.jsonl", chunks=iter([b"x"])
    )
    for name in ("curation:import_detail", "curation:import_progress"):
        assert c.post(reverse(name, args=[project.slug, job.pk])).status_code == 405
    strict = client_for(personas["manager"], enforce_csrf=True)
    assert strict.post(page, {"file": upload("a.jsonl", jsonl(GOOD))}).status_code == 403
    assert ImportJob.objects.count() == 1


def test_a_job_is_not_reachable_through_another_projects_url(personas, project, client_for):
    from tests.factories import ProjectFactory

    other = ProjectFactory()
    job = services.import_job_create(
        project=other, created_by=personas["admin"], filename="a.jsonl", chunks=iter([b"x"])
    )
    url = reverse("curation:import_detail", args=[project.slug, job.pk])
    assert client_for(personas["admin"]).get(url).status_code == 404


def test_upload_queues_a_job_that_runs_after_commit_and_shows_progress(
    personas, project, client_for, django_capture_on_commit_callbacks
):
    c = client_for(personas["manager"])
    url = reverse("curation:import_page", args=[project.slug])
    with django_capture_on_commit_callbacks() as callbacks:
        response = c.post(url, {"file": upload("a.jsonl", jsonl(GOOD)), "format": ""})
    job = ImportJob.objects.get()
    assert response["Location"] == reverse("curation:import_detail", args=[project.slug, job.pk])
    assert len(callbacks) == 1  # the task is sent only once the transaction commits
    detail = c.get(response["Location"]).content.decode()
    assert 'hx-trigger="every 1s"' in detail and "<progress" in detail
    assert "style=" not in detail and "<script>" not in detail
    services.import_job_run(job_id=job.pk)
    partial = c.get(reverse("curation:import_progress", args=[project.slug, job.pk]))
    text = partial.content.decode()
    assert "hx-trigger" not in text  # finished: polling stops
    assert "Succeeded" in text and "Imported 1 items" in text


def test_errors_are_shown_autoescaped(personas, project, client_for, tmp_path):
    evil = {"external_id": "<script>alert(1)</script>", "prompt": "Q", "output": "A"}
    job = run_file(project, personas["manager"], tmp_path, jsonl(evil, evil, {"prompt": "Q"}))
    text = (
        client_for(personas["manager"])
        .get(reverse("curation:import_detail", args=[project.slug, job.pk]))
        .content.decode()
    )
    assert "<script>alert" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "Duplicate external_id" in text and "Missing output or candidates" in text


def test_upload_form_reports_an_unknown_extension(personas, project, client_for):
    url = reverse("curation:import_page", args=[project.slug])
    response = client_for(personas["manager"]).post(url, {"file": upload("a.txt", "x")})
    assert response.status_code == 400
    assert b"Cannot tell the format" in response.content
    assert not ImportJob.objects.exists()


def test_project_page_links_to_imports_for_managers_only(personas, project, client_for):
    url = reverse("curation:project_detail", args=[project.slug])
    link = reverse("curation:import_page", args=[project.slug]).encode()
    assert link in client_for(personas["manager"]).get(url).content
    assert link not in client_for(personas["expert"]).get(url).content


def test_import_page_queries_are_bounded(
    personas, project, client_for, tmp_path, django_assert_max_num_queries
):
    for n in range(5):
        run_file(project, personas["manager"], tmp_path, jsonl({**GOOD, "external_id": n}))
    c = client_for(personas["manager"])
    with django_assert_max_num_queries(8):
        assert c.get(reverse("curation:import_page", args=[project.slug])).status_code == 200


# ---- API ----------------------------------------------------------------------------------

API_MATRIX = [("expert", 403), ("manager", None), ("admin", None), ("outsider", 404)]


@pytest.mark.parametrize(("persona", "status"), API_MATRIX)
def test_api_upload_by_persona(personas, project, api_for, persona, status):
    response = api_for(personas[persona]).post(
        f"/api/v1/projects/{project.slug}/imports/",
        {"file": upload("a.jsonl", jsonl(GOOD))},
        format="multipart",
    )
    assert response.status_code == (status or 202)
    if status is None:
        body = response.json()
        assert body["status"] == "queued" and body["format"] == "jsonl"
        assert body["filename"] == "a.jsonl"


@pytest.mark.parametrize(("persona", "status"), API_MATRIX)
def test_api_json_body_by_persona(personas, project, api_for, persona, status):
    response = api_for(personas[persona]).post(
        f"/api/v1/projects/{project.slug}/imports/", {"items": [GOOD]}, format="json"
    )
    assert response.status_code == (status or 201)
    if status is None:
        body = response.json()
        assert body["status"] == "succeeded" and body["imported_count"] == 1
    assert Item.objects.exists() is (status is None)


@pytest.mark.parametrize(("persona", "status"), API_MATRIX)
def test_api_import_detail_and_list_by_persona(personas, project, api_for, persona, status):
    job = services.import_items_inline(project=project, created_by=personas["admin"], items=[GOOD])
    c = api_for(personas[persona])
    detail = c.get(f"/api/v1/imports/{job.pk}/")
    listing = c.get(f"/api/v1/projects/{project.slug}/imports/")
    assert detail.status_code == listing.status_code == (status or 200)
    if status is None:
        assert detail.json()["imported_count"] == 1
        assert [j["id"] for j in listing.json()["results"]] == [job.pk]


def test_api_json_body_with_bad_items_answers_400_with_the_errors(personas, project, api_for):
    response = api_for(personas["manager"]).post(
        f"/api/v1/projects/{project.slug}/imports/",
        {"items": [GOOD, {"external_id": "y", "prompt": "Q", "output": ""}, "x"]},
        format="json",
    )
    assert response.status_code == 400
    body = response.json()
    assert body["status"] == "failed"
    assert body["errors"] == [
        {"line": 2, "field": "output", "message": "Must not be empty."},
        {"line": 3, "field": "", "message": "Expected a JSON object, got a string."},
    ]
    assert not Item.objects.exists()
    again = api_for(personas["manager"]).get(f"/api/v1/imports/{body['id']}/").json()
    assert again["error_count"] == 2


def test_api_json_body_over_10000_items_is_refused_naming_the_limit(personas, project, api_for):
    response = api_for(personas["manager"]).post(
        f"/api/v1/projects/{project.slug}/imports/",
        {"items": [{**GOOD, "external_id": n} for n in range(10_001)]},
        format="json",
    )
    assert response.status_code == 400
    assert "At most 10000 items" in response.json()["items"][0]
    assert not ImportJob.objects.exists()


def test_api_json_body_of_10000_items_is_imported(personas, project, api_for):
    response = api_for(personas["manager"]).post(
        f"/api/v1/projects/{project.slug}/imports/",
        {"items": [{**GOOD, "external_id": n} for n in range(10_000)]},
        format="json",
    )
    assert response.status_code == 201
    assert Item.objects.filter(project=project).count() == 10_000


def test_api_refuses_wrong_methods_and_bad_requests(personas, project, api_for):
    c = api_for(personas["manager"])
    url = f"/api/v1/projects/{project.slug}/imports/"
    assert c.put(url, {}, format="json").status_code == 405
    assert c.delete(url).status_code == 405
    job = services.import_items_inline(project=project, created_by=personas["admin"], items=[GOOD])
    assert c.post(f"/api/v1/imports/{job.pk}/").status_code == 405
    assert c.post(url, {"items": []}, format="json").status_code == 400
    assert c.post(url, {"nothing": 1}, format="json").status_code == 400
    assert c.post(url, {}, format="multipart").status_code == 400
    response = c.post(url, {"file": upload("a.txt", "x")}, format="multipart")
    assert response.status_code == 400 and "Cannot tell the format" in response.json()["format"][0]


def test_api_session_posts_need_csrf(personas, project):
    from rest_framework.test import APIClient

    c = APIClient(enforce_csrf_checks=True)
    c.force_login(personas["manager"])
    response = c.post(f"/api/v1/projects/{project.slug}/imports/", {"items": [GOOD]}, format="json")
    assert response.status_code == 403
    assert not ImportJob.objects.exists()


def test_api_unauthenticated_gets_401(project):
    from rest_framework.test import APIClient

    assert APIClient().get(f"/api/v1/projects/{project.slug}/imports/").status_code == 401


# ---- Management command --------------------------------------------------------------------


def test_import_items_command_imports_and_prints_counts(personas, project, capsys):
    call_command("import_items", project.slug, str(DATA / "items.jsonl"))
    call_command("import_items", project.slug, str(DATA / "items.csv"), "--user", "mona-manager")
    out = capsys.readouterr().out
    assert "imported 3 items, skipped 0" in out
    assert "imported 0 items, skipped 3" in out
    assert Item.objects.filter(project=project).count() == 3
    assert ImportJob.objects.filter(created_by=personas["manager"]).count() == 1


def test_import_items_command_fails_with_the_errors_on_a_bad_file(project, tmp_path, capsys):
    path = tmp_path / "bad.jsonl"
    path.write_text(jsonl(GOOD, {"external_id": "y", "prompt": "Q"}))
    with pytest.raises(CommandError, match="nothing was imported"):
        call_command("import_items", project.slug, str(path))
    err = capsys.readouterr().err
    assert "line 2: output: Missing output or candidates" in err
    assert not Item.objects.exists()


def test_import_items_command_refuses_bad_arguments(project, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text("nope\n")
    with pytest.raises(CommandError):
        call_command("import_items", project.slug, str(path))
    with pytest.raises(CommandError, match="No project"):
        call_command("import_items", "no-such-project", str(path))
    with pytest.raises(CommandError, match="No such file"):
        call_command("import_items", project.slug, str(tmp_path / "missing.jsonl"))


# ---- Demo data ------------------------------------------------------------------------------


def test_seed_demo_imports_the_demo_items_once(capsys):
    call_command("seed_demo")
    call_command("seed_demo")
    out = capsys.readouterr().out
    assert "Demo items: imported 40, skipped 0" in out
    assert "Demo items: imported 0, skipped 40" in out
    items = Item.objects.filter(project__slug="support-answers")
    assert items.count() == 40
    assert items.filter(messages__isnull=False).exists()
    assert Candidate.objects.filter(item__project__slug="support-answers", position=1).exists()
    assert items.filter(priority__gt=0).exists()


# ---- Real worker, PostgreSQL specifics, scale ----------------------------------------------


@pytest.fixture
def worker(transactional_db, celery_worker):
    return celery_worker


@pytest.mark.django_db(transaction=True)
def test_a_queued_upload_is_run_by_a_real_celery_worker(personas, project, api_for, worker):
    response = api_for(personas["manager"]).post(
        f"/api/v1/projects/{project.slug}/imports/",
        {"file": upload("items.jsonl", (DATA / "items.jsonl").read_text())},
        format="multipart",
    )
    assert response.status_code == 202
    job_id = response.json()["id"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        job = ImportJob.objects.get(pk=job_id)
        if job.finished:
            break
        time.sleep(0.1)
    assert job.status == ImportStatus.SUCCEEDED, job.message
    assert job.imported_count == 3
    assert Item.objects.filter(project=project).count() == 3
    # a redelivered message is a no-op
    from curation.tasks import import_job_run_task

    import_job_run_task.apply(args=[job_id])
    assert Item.objects.filter(project=project).count() == 3


@pytest.mark.django_db(transaction=True)
def test_progress_is_visible_to_other_connections_while_validating(
    personas, project, tmp_path, monkeypatch
):
    """The progress bar reads the job from another connection while the import runs."""
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL only")
    monkeypatch.setattr(services, "PROGRESS_EVERY_S", 0)
    content = jsonl(*[{**GOOD, "external_id": n} for n in range(30_000)])
    path = tmp_path / "p.jsonl"
    path.write_text(content)
    job = services.import_job_create(
        project=project, created_by=personas["manager"], filename="p.jsonl", path=path
    )
    seen: set[int] = set()
    done = threading.Event()

    def watch():
        from django.db import connections

        try:
            while not done.is_set():
                row = ImportJob.objects.filter(pk=job.pk).values("status", "lines_done").get()
                if row["status"] == "validating":
                    seen.add(row["lines_done"])
                time.sleep(0.005)
        finally:
            connections.close_all()

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        services.import_job_run(job_id=job.pk)
    finally:
        done.set()
        watcher.join()
    assert len({n for n in seen if 0 < n < 30_000}) >= 2, seen


@pytest.mark.slow
def test_a_100k_line_import_runs_in_bounded_memory(personas, project, tmp_path):
    path = tmp_path / "big.jsonl"
    with open(path, "w") as f:
        for n in range(100_000):
            f.write(
                json.dumps(
                    {
                        "external_id": f"item-{n}",
                        "prompt": f"Customer question number {n}: where is my order? " * 3,
                        "candidates": [
                            {"output": f"Answer {n} from A. " * 5, "model": "a"},
                            {"output": f"Answer {n} from B. " * 5, "model": "b"},
                        ],
                        "metadata": {"n": n},
                    }
                )
                + "\n"
            )
    size = path.stat().st_size
    job = services.import_job_create(
        project=project, created_by=personas["manager"], filename="big.jsonl", path=path
    )
    tracemalloc.start()
    try:
        job = services.import_job_run(job_id=job.pk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert job.status == ImportStatus.SUCCEEDED, job.errors
    assert job.imported_count == 100_000
    assert Candidate.objects.filter(item__project=project).count() == 200_000
    assert peak < size / 4, (peak, size)  # the file is ~50 MB; the import holds a few MB
