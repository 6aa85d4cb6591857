"""Dataset builds without PostgreSQL: the SQLite demo (``make demo``) builds a version, and its
data files are byte for byte what PostgreSQL builds from the same decisions. On PostgreSQL,
the portable decision source (the one SQLite uses) gives exactly the files COPY gives."""

from __future__ import annotations

import hashlib
import io
import json

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from curation.models import Project
from curation.services.settings import project_settings_update
from feedback.services import gold_set
from tests.redline.subprocess_env import run_django
from tests.training.test_build import ALL, every_decision
from training import selectors
from training.models import DatasetVersion
from training.services import dataset_version_delete
from training.services import datasets as build_service
from training.services.sources import (
    PortableSource,
    portable_selection,
    portable_selection_summary,
)

pytestmark = pytest.mark.django_db

BUILD_ARGS = [
    "support-answers",
    "--kinds",
    "sft",
    "preference",
    "kto",
    "--outcomes",
    "accepted",
    "rejected",
    "--eval-fraction",
    "0.25",
    "--seed",
    "3",
]


def decide_demo(project) -> None:
    """The same decisions in any database, on the demo project ``seed_demo`` made (overlap 2;
    expert3 has decided its first dozen items). expert1 decides every item: on expert3's, as
    expert3 did, except for expert3's first correction of a single output, which expert1
    corrects otherwise; on the others, a cycle of accepts, corrections (real and
    whitespace-only), rejections, comparisons and ties. expert2 gives the second opinion on
    the rest, as expert1 did, except for rejecting the first plain accept. The manager
    adjudicates the two disagreements: their own text for one, a rejection for the other."""
    from django.contrib.auth import get_user_model

    from curation.services.queue import queue_claim_next
    from feedback.models import ItemOutcome, Outcome, Review
    from feedback.services import item_adjudicate, review_submit

    names = ("manager", "expert1", "expert2", "expert3")
    users = {u.username: u for u in get_user_model().objects.filter(username__in=names)}
    manager, expert1, expert2, expert3 = (users[name] for name in names)

    def same_as(review: Review) -> dict:
        return {
            "verdict": review.verdict,
            "candidate": review.candidate_id,
            "corrected_output": review.corrected_output,
            "preferred_candidate": review.preferred_candidate_id,
            "tie": review.tie,
            "labels": review.labels,
        }

    def fresh(n: int, candidates) -> dict:
        labels = {"tone": ("friendly", "neutral", "curt")[n % 3], "helpfulness": n % 5 + 1}
        first, last = candidates[0], candidates[-1]
        pair = len(candidates) > 1
        step = n % 6
        if step == 3:
            return {"verdict": "reject", "candidate": first.pk, "labels": labels}
        fields = {"verdict": "accept", "labels": labels}
        if pair:
            fields["preferred_candidate"] = (first, last)[n % 2].pk
        if step == 1:  # a real correction
            fields |= {"verdict": "correct", "candidate": last.pk}
            fields["corrected_output"] = last.output.rstrip(".") + ": see our help centre."
            if pair:
                fields["preferred_candidate"] = last.pk
        elif step == 4:  # a whitespace-only correction
            fields |= {"verdict": "correct", "candidate": first.pk}
            fields["corrected_output"] = first.output + "\n"
            if pair:
                fields["preferred_candidate"] = first.pk
        elif step == 5 and pair:
            fields |= {"tie": True, "preferred_candidate": None}
        return fields

    disagreed = False
    n = 0
    while (claim := queue_claim_next(project=project, expert=expert1)) is not None:
        item = claim.item
        candidates = list(item.candidates.order_by("position"))
        prior = Review.objects.filter(item=item, expert=expert3).exclude(verdict="skip").first()
        if prior is None:
            fields = fresh(n, candidates)
            n += 1
        else:
            fields = same_as(prior)
            if prior.verdict == "correct" and not prior.preferred_candidate_id and not disagreed:
                fields["corrected_output"] = "Another correction entirely."
                disagreed = True
        review_submit(item=item, expert=expert1, **fields)
    rejected_one = False
    while (claim := queue_claim_next(project=project, expert=expert2)) is not None:
        item = claim.item
        fields = same_as(Review.objects.get(item=item, expert=expert1))
        if fields["verdict"] == "accept" and not fields["preferred_candidate"] and not rejected_one:
            fields |= {"verdict": "reject"}
            rejected_one = True
        review_submit(item=item, expert=expert2, **fields)
    pending = list(
        ItemOutcome.objects.filter(project=project, outcome=Outcome.NEEDS_ADJUDICATION)
        .select_related("item")
        .order_by("item__external_id")
    )
    assert len(pending) == 2, pending
    item_adjudicate(
        item=pending[0].item,
        manager=manager,
        outcome="accepted",
        final_text="The adjudicated answer: reset it from Settings > Security.",
    )
    item_adjudicate(item=pending[1].item, manager=manager, outcome="rejected")


# What the demo's decisions are filtered by, on both databases.
DEMO_FILTERS = [
    {"outcomes": ["accepted", "rejected"]},
    {"labels": {"tone": "neutral"}},
    {"labels": {"helpfulness": 3}, "outcomes": ["accepted", "rejected"]},
    {"labels": {"tone": "curt", "helpfulness": 4}},
    {"models": ["support-gpt-v2"]},
    {"sources": ["adjudicated"], "outcomes": ["accepted", "rejected"]},
    {"min_agreement": 1},
    {"gold": "exclude", "date_from": "2000-01-01"},
]


def demo_counts(project, summary=selectors.selection_summary) -> list[list[int]]:
    """The live count of each of ``DEMO_FILTERS``."""
    from dataclasses import astuple

    from training.services import params_clean

    return [
        list(
            astuple(
                summary(project=project, filters=params_clean(project=project, raw=raw)["filters"])
            )
        )
        for raw in DEMO_FILTERS
    ]


def data_files(version: DatasetVersion) -> dict[str, str]:
    """``{data file name: sha256}`` (the lineage files name database ids)."""
    return {f["name"]: f["sha256"] for f in version.files}


def all_files(version: DatasetVersion) -> dict[str, str]:
    """Every file's sha256, as read from the disk."""
    folder = selectors.version_dir(version)
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "manifest.json"
    }


SQLITE_DEMO = """
import io, json
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection
from django.test import Client
from curation.models import Project
from tests.training.test_sqlite import BUILD_ARGS, all_files, decide_demo, demo_counts
from training.models import DatasetVersion
from training.services import dataset_version_delete
from training.tasks import dataset_build_task

assert connection.vendor == "sqlite"
call_command("migrate", verbosity=0, interactive=False)
call_command("seed_demo", stdout=io.StringIO())
project = Project.objects.get(slug="support-answers")
decide_demo(project)
counts = demo_counts(project)
client = Client()
client.force_login(get_user_model().objects.get(username="manager"))
datasets_url = f"/projects/{project.slug}/datasets/"
form = {"kinds": ["sft", "preference", "kto"], "eval_fraction": "0.1", "seed": "0",
        "outcomes": ["accepted", "rejected"], "gold": "include", "min_edit_chars": "1",
        "dedup": "on", "system_prompt": ""}
page = client.get(datasets_url)
count = client.get(datasets_url + "count/", form)
# the whole loop on the web: build from the page (queued for the demo's worker), then what
# the worker runs
posted = client.post(datasets_url, form)
web_version = DatasetVersion.objects.get()
dataset_build_task(web_version.pk)
web_version.refresh_from_db()
shown = client.get(posted["Location"])
web = [page.status_code, page.content.decode(), count.status_code, count.content.decode(),
       posted.status_code, web_version.status, web_version.error, shown.status_code,
       shown.content.decode()]
builds = []
for _ in range(2):  # build, delete, build again
    out = io.StringIO()
    call_command("build_dataset", *BUILD_ARGS, stdout=out)
    version = DatasetVersion.objects.get(created_via="cli")
    builds.append({
        "status": version.status, "error": version.error, "output": out.getvalue(),
        "files": version.files, "on_disk": all_files(version), "counts": version.row_counts,
        "format": version.format, "content_sha256": version.content_sha256,
        "dropped": version.manifest["duplicates_dropped"], "items": version.items_total,
        "folder": str(settings.STORAGE_DIR / version.storage_path), "attempts": version.attempts,
    })
    if len(builds) == 1:
        dataset_version_delete(version=version)
print(json.dumps({
    "web": web,
    "counts": counts,
    "builds": builds,
}))
"""


def test_the_sqlite_demo_builds_versions_with_the_bytes_postgresql_builds(tmp_path):
    result = run_django(
        SQLITE_DEMO,
        DATABASE_URL=f"sqlite:///{tmp_path}/demo.db",
        REDLINE_DEBUG="1",
        REDLINE_VAR_DIR=str(tmp_path),
        REDLINE_STORAGE_DIR=str(tmp_path / "storage"),
        CELERY_BROKER_URL=None,  # the demo's own broker: files under REDLINE_VAR_DIR
        CELERY_RESULT_BACKEND=None,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    # on the web: the page with its live count, a build from the form, the version's page
    page, page_html, count, count_html, posted, status, error, shown, shown_html = report["web"]
    assert (page, count, posted, shown) == (200, 200, 302, 200)
    assert 'data-selected="' in page_html
    assert 'data-selected="40"' in count_html  # every demo item has its final decision
    assert status == "succeeded", error
    assert len(list((tmp_path / "broker" / "queue").iterdir())) == 1  # the page queued it
    assert "sft.train.jsonl" in shown_html
    first, second = report["builds"]
    assert first["status"] == "succeeded", first["error"]
    assert first["folder"] != second["folder"]
    # a rebuild on SQLite is byte-identical, lineage included
    assert second["status"] == "succeeded" and second["attempts"] == 1
    assert second["on_disk"] == first["on_disk"]
    assert second["content_sha256"] == first["content_sha256"]
    assert first["items"] == 40
    kinds = {f["kind"] for f in first["files"]}
    assert kinds == {"sft", "preference", "kto"}
    assert {f["split"] for f in first["files"]} == {"train", "eval"}
    assert first["format"] == "conversational"  # the demo has chats
    for entry in first["files"]:
        line = f"{entry['name']}: {entry['rows']:,} rows, sha256 {entry['sha256']}"
        assert line in first["output"]

    # the files are trl's: they load with datasets
    import datasets

    folder = second["folder"]
    for entry in second["files"]:
        loaded = datasets.load_dataset(
            "json",
            data_files=f"{folder}/{entry['name']}",
            split="train",
            cache_dir=str(tmp_path / "hf"),
        )
        assert loaded.num_rows == entry["rows"]
        expected = {
            "sft": {"messages"},
            "preference": {"prompt", "chosen", "rejected"},
            "kto": {"prompt", "completion", "label"},
        }[entry["kind"]]
        assert set(loaded.column_names) == expected

    # PostgreSQL, the same steps: the same data files (lineage names other ids)
    call_command("seed_demo", stdout=io.StringIO())
    project = Project.objects.get(slug="support-answers")
    decide_demo(project)
    assert demo_counts(project) == report["counts"]  # the live count, by SQL here
    assert demo_counts(project, portable_selection_summary) == report["counts"]
    call_command("build_dataset", *BUILD_ARGS, stdout=io.StringIO())
    version = DatasetVersion.objects.get()
    assert version.status == "succeeded", version.error
    assert data_files(version) == {f["name"]: f["sha256"] for f in first["files"]}
    assert version.row_counts == first["counts"]
    assert version.manifest["duplicates_dropped"] == first["dropped"]


@pytest.fixture
def portable(monkeypatch):
    """Builds read through the portable source (the one SQLite uses), here on PostgreSQL;
    the sources made, for the test to check."""
    made = []

    def source(**kwargs):
        made.append(PortableSource(**kwargs))
        return made[-1]

    monkeypatch.setattr(build_service, "decision_source", source)
    return made


@pytest.mark.parametrize("chat", [False, True])
def test_the_portable_source_gives_the_bytes_copy_gives_for_every_decision_type(
    project, personas, experts, decide_item, compare_mode, build, request, chat
):
    every_decision(project, experts[0], decide_item, chat=chat)
    params = {**ALL, "eval_fraction": 0.3, "seed": 5, "system_prompt": "Be brief."}
    by_copy = build(project, personas["manager"], **params)
    assert by_copy.status == "succeeded", by_copy.error
    files = all_files(by_copy)
    dataset_version_delete(version=by_copy)
    made = request.getfixturevalue("portable")
    by_orm = build(project, personas["manager"], **params)
    assert len(made) == 1
    assert by_orm.pk != by_copy.pk and by_orm.status == "succeeded", by_orm.error
    assert all_files(by_orm) == files  # data, lineage and row hashes
    assert by_orm.content_sha256 == by_copy.content_sha256
    assert by_orm.format == ("conversational" if chat else "standard")
    assert by_orm.manifest["decisions"] == by_copy.manifest["decisions"]


def test_the_portable_source_drops_the_same_duplicates(
    project, personas, experts, decide_item, build, portable
):
    for n in range(4):
        decide_item(
            project,
            [(experts[0], "accept", {})],
            prompt="Same question?" if n < 3 else "Other?",
            candidates=[("Same answer.", "m")],
        )
    version = build(project, personas["manager"], eval_fraction=0)
    assert version.status == "succeeded", version.error
    assert len(portable) == 1
    assert version.manifest["duplicates_dropped"] == {"sft": 2, "preference": 0, "kto": 2}
    assert version.row_counts["sft"] == {"train": 2, "eval": 0}
    lineage = (selectors.version_dir(version) / "sft.train.lineage.jsonl").read_text()
    assert [json.loads(line)["row"] for line in lineage.splitlines()] == [0, 1]


def test_the_portable_selection_and_counts_match_the_sql_for_every_filter(
    project, personas, experts, decide_item, compare_mode
):
    project_settings_update(
        project=project,
        label_schema=[
            {"key": "topic", "prompt": "?", "type": "single_choice", "options": ["a", "b"]},
            {"key": "tags", "prompt": "?", "type": "multiple_choice", "options": ["x", "y"]},
            {"key": "stars", "prompt": "?", "type": "rating", "scale": 5},
        ],
    )
    e = experts[0]
    gold = decide_item(
        project,
        [(e, "accept", {"labels": {"topic": "a", "tags": ["x", "y"], "stars": 3}})],
        prompt="A?",
        candidates=[("a", "old")],
    )
    decide_item(
        project,
        [(e, "correct", {"corrected_output": "b!", "labels": {"topic": "b", "tags": ["y"]}})],
        messages=[{"role": "user", "content": "B?"}],
        candidates=[("b", "new")],
    )
    decide_item(
        project,
        [(e, "accept", lambda c: {"tie": True, "labels": {"stars": 5}})],
        prompt="C?",
        candidates=[("c1", "old"), ("c2", "new")],
    )
    decide_item(project, [(e, "reject", {})], prompt="D?", candidates=[("d", "new")])
    gold_set(item=gold, actor=personas["manager"], verdict="accept")
    today = timezone.localdate().isoformat()
    cases = [
        {},
        {"outcomes": ["rejected"]},
        {"models": ["old"]},
        {"labels": {"topic": "a"}},
        {"labels": {"tags": "y"}},
        {"labels": {"tags": "x", "topic": "a"}},
        {"labels": {"stars": 3}},
        {"labels": {"stars": 5}},
        {"labels": {"stars": 4}},
        {"gold": "only"},
        {"gold": "exclude"},
        {"min_agreement": 1},
        {"date_from": today, "date_to": today},
        {"date_to": "2000-01-01"},
        {"sources": ["adjudicated"]},
    ]
    selected = []
    for raw in cases:
        filters = build_service.params_clean(
            project=project, raw={"outcomes": ["accepted", "rejected"], **raw}
        )["filters"]
        sql, params = selectors.decision_stream_sql(project=project, filters=filters)
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT x.id FROM ({sql}) x", params)  # noqa: S608
            expected = [row[0] for row in cursor.fetchall()]
        got = list(
            portable_selection(project=project, filters=filters)
            .order_by("item_id")
            .values_list("item_id", flat=True)
        )
        assert got == expected, raw
        selected.append(len(got))
        assert portable_selection_summary(
            project=project, filters=filters
        ) == selectors.selection_summary(project=project, filters=filters), raw
    assert selected == [4, 1, 2, 1, 2, 1, 1, 1, 0, 1, 3, 4, 4, 0, 0]


def test_postgresql_writes_the_lineage_json_python_writes_for_hostile_ids(
    project, personas, experts, decide_item, build, request
):
    """The build's query has PostgreSQL write part of each lineage line (external id, item
    id, adjudicator, reviews, experts, guideline versions): byte for byte json.dumps's,
    and the portable source's (which writes it in Python)."""
    hostile = ['q"uote\\back\\\\slash', "tab\tnew\nline\r\x01\x1f\x7f", "é ✓ 🙂 \u2028\u2029", ""]
    for n, external_id in enumerate(hostile):
        decide_item(
            project,
            [(experts[0], "accept", {})],
            external_id=external_id or f"plain-{n}",
            prompt=f"Q{n}",
            candidates=[("A", "m")],
        )
    by_copy = build(project, personas["manager"], eval_fraction=0)
    assert by_copy.status == "succeeded", by_copy.error
    path = selectors.version_dir(by_copy) / "kto.train.lineage.jsonl"
    lines = path.read_bytes().decode().split("\n")[:-1]  # not splitlines: U+2028 stays raw
    assert [json.loads(line)["item"] for line in lines] == [h or "plain-3" for h in hostile]
    for line in lines:
        assert line == json.dumps(json.loads(line), ensure_ascii=False, separators=(",", ":"))
    files = all_files(by_copy)
    dataset_version_delete(version=by_copy)
    request.getfixturevalue("portable")
    by_orm = build(project, personas["manager"], eval_fraction=0)
    assert all_files(by_orm) == files
