"""Dataset builds from real decisions: every decision type, filters, splits, dedup,
reproducibility, idempotency, failures and comparisons."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from curation.services.settings import project_settings_update
from feedback.models import ItemOutcome
from feedback.services import gold_set, item_adjudicate
from tests.factories import ProjectFactory, membership_add
from tests.training.conftest import read_jsonl, rows
from training import selectors
from training.models import DatasetStatus, DatasetVersion
from training.services import (
    dataset_version_build,
    dataset_version_delete,
    dataset_version_request,
)
from training.services.mapping import normalised_prompt
from training.tasks import dataset_build_task

pytestmark = pytest.mark.django_db

ALL = {"eval_fraction": 0, "outcomes": ["accepted", "rejected"]}


def every_decision(project, expert, decide_item, *, chat: bool = False):
    """One item per decision type, in this order, as plain prompts or as chats."""

    def prompt(text):
        if chat:
            return {"messages": [{"role": "user", "content": text}]}
        return {"prompt": text}

    def first(c):
        return {"preferred_candidate": c[0].pk}

    decide_item(
        project, [(expert, "accept", {})], **prompt("Q-accept"), candidates=[("A-accept", "m1")]
    )
    decide_item(
        project,
        [(expert, "correct", {"corrected_output": "A-fixed properly"})],
        **prompt("Q-correct"),
        candidates=[("A-orig", "m1")],
    )
    decide_item(
        project,
        [(expert, "correct", {"corrected_output": "A  ws\n"})],
        **prompt("Q-ws"),
        candidates=[("A ws", "m1")],
    )
    decide_item(
        project, [(expert, "reject", {})], **prompt("Q-reject"), candidates=[("A-bad", "m1")]
    )
    decide_item(
        project,
        [(expert, "accept", first)],
        **prompt("Q-cmp"),
        candidates=[("A-win", "m1"), ("A-lose", "m2")],
    )
    decide_item(
        project,
        [
            (
                expert,
                "correct",
                lambda c: {
                    "preferred_candidate": c[1].pk,
                    "candidate": c[1].pk,
                    "corrected_output": "B fixed",
                },
            )
        ],
        **prompt("Q-cmp2"),
        candidates=[("A other", "m1"), ("B orig", "m2")],
    )
    decide_item(
        project,
        [(expert, "accept", {"tie": True})],
        **prompt("Q-tie"),
        candidates=[("T1", "m1"), ("T2", "m2")],
    )


EXPECTED_SFT = [
    ("Q-accept", "A-accept"),
    ("Q-correct", "A-fixed properly"),
    ("Q-ws", "A  ws\n"),
    ("Q-cmp", "A-win"),
    ("Q-cmp2", "B fixed"),
    ("Q-tie", "T1"),
    ("Q-tie", "T2"),
]
EXPECTED_PREFERENCE = [
    ("Q-correct", "A-fixed properly", "A-orig"),
    ("Q-cmp", "A-win", "A-lose"),
    ("Q-cmp2", "B fixed", "B orig"),
    ("Q-cmp2", "B fixed", "A other"),
]
EXPECTED_KTO = [
    ("Q-accept", "A-accept", True),
    ("Q-correct", "A-fixed properly", True),
    ("Q-correct", "A-orig", False),
    ("Q-ws", "A  ws\n", True),
    ("Q-reject", "A-bad", False),
    ("Q-cmp", "A-win", True),
    ("Q-cmp", "A-lose", False),
    ("Q-cmp2", "B fixed", True),
    ("Q-cmp2", "B orig", False),
    ("Q-cmp2", "A other", False),
    ("Q-tie", "T1", True),
    ("Q-tie", "T2", True),
]


def test_every_decision_type_lands_in_the_right_kinds_as_standard_rows(
    project, personas, experts, decide_item, compare_mode, build
):
    every_decision(project, experts[0], decide_item)
    version = build(project, personas["manager"], **ALL)
    assert version.status == DatasetStatus.SUCCEEDED, version.error
    assert version.format == "standard"
    sft = rows(version, "sft.train.jsonl")
    assert sft == [{"prompt": p, "completion": c} for p, c in EXPECTED_SFT]
    assert rows(version, "preference.train.jsonl") == [
        {"prompt": p, "chosen": c, "rejected": r} for p, c, r in EXPECTED_PREFERENCE
    ]
    assert rows(version, "kto.train.jsonl") == [
        {"prompt": p, "completion": c, "label": label} for p, c, label in EXPECTED_KTO
    ]
    # no eval side was asked for, so no eval files
    assert [f["name"] for f in version.files] == [
        "sft.train.jsonl",
        "preference.train.jsonl",
        "kto.train.jsonl",
    ]
    assert version.row_counts == {
        "sft": {"train": 7, "eval": 0},
        "preference": {"train": 4, "eval": 0},
        "kto": {"train": 12, "eval": 0},
    }
    assert version.rows_total == 23


def test_every_decision_type_lands_in_the_right_kinds_as_conversational_rows(
    project, personas, experts, decide_item, compare_mode, build
):
    every_decision(project, experts[0], decide_item, chat=True)
    version = build(project, personas["manager"], **ALL)
    assert version.status == DatasetStatus.SUCCEEDED, version.error
    assert version.format == "conversational"

    def user(text):
        return [{"role": "user", "content": text}]

    def assistant(text):
        return [{"role": "assistant", "content": text}]

    assert rows(version, "sft.train.jsonl") == [
        {"messages": [*user(p), *assistant(c)]} for p, c in EXPECTED_SFT
    ]
    assert rows(version, "preference.train.jsonl") == [
        {"prompt": user(p), "chosen": assistant(c), "rejected": assistant(r)}
        for p, c, r in EXPECTED_PREFERENCE
    ]
    assert rows(version, "kto.train.jsonl") == [
        {"prompt": user(p), "completion": assistant(c), "label": label}
        for p, c, label in EXPECTED_KTO
    ]


def test_a_mixed_selection_is_conversational_and_the_system_prompt_opens_chats_without_one(
    project, personas, experts, decide_item, build
):
    e = experts[0]
    decide_item(project, [(e, "accept", {})], prompt="Plain?", candidates=[("P.", "m")])
    decide_item(
        project,
        [(e, "accept", {})],
        messages=[{"role": "system", "content": "Own."}, {"role": "user", "content": "Chat?"}],
        candidates=[("C.", "m")],
    )
    version = build(
        project, personas["manager"], eval_fraction=0, kinds=["sft"], system_prompt="House style."
    )
    assert rows(version, "sft.train.jsonl") == [
        {
            "messages": [
                {"role": "system", "content": "House style."},
                {"role": "user", "content": "Plain?"},
                {"role": "assistant", "content": "P."},
            ]
        },
        {
            "messages": [
                {"role": "system", "content": "Own."},
                {"role": "user", "content": "Chat?"},
                {"role": "assistant", "content": "C."},
            ]
        },
    ]


def test_a_whitespace_only_correction_makes_no_preference_pair_unless_asked(
    project, personas, experts, decide_item, build
):
    decide_item(
        project,
        [(experts[0], "correct", {"corrected_output": "Paris. \n"})],
        candidates=[("Paris.", "m")],
    )
    version = build(project, personas["manager"], eval_fraction=0)
    assert rows(version, "sft.train.jsonl") == [
        {"prompt": "What is the capital of France?", "completion": "Paris. \n"}
    ]
    assert rows(version, "preference.train.jsonl") == []
    assert [r["label"] for r in rows(version, "kto.train.jsonl")] == [True]
    strict = build(project, personas["manager"], eval_fraction=0, min_edit_chars=0)
    assert strict.pk != version.pk
    assert rows(strict, "preference.train.jsonl") == [
        {"prompt": "What is the capital of France?", "chosen": "Paris. \n", "rejected": "Paris."}
    ]


def test_ties_make_no_preference_pair(project, personas, experts, decide_item, compare_mode, build):
    decide_item(
        project, [(experts[0], "accept", {"tie": True})], candidates=[("One.", "a"), ("Two.", "b")]
    )
    version = build(project, personas["manager"], eval_fraction=0, kinds=["sft", "kto"])
    assert [r["completion"] for r in rows(version, "sft.train.jsonl")] == ["One.", "Two."]
    refused = build(project, personas["manager"], eval_fraction=0, kinds=["preference"])
    assert refused.status == DatasetStatus.FAILED
    assert "give no rows for preference" in refused.error
    assert not selectors.version_dir(refused).exists()


def test_rejected_outcomes_only_come_in_when_asked_for(
    project, personas, experts, decide_item, build
):
    decide_item(project, [(experts[0], "accept", {})], prompt="Good?", candidates=[("Yes.", "m")])
    decide_item(project, [(experts[0], "reject", {})], prompt="Bad?", candidates=[("No.", "m")])
    default = build(project, personas["manager"], eval_fraction=0)
    assert [r["prompt"] for r in rows(default, "kto.train.jsonl")] == ["Good?"]
    assert default.manifest["decisions"]["selected"] == 1
    both = build(project, personas["manager"], **ALL)
    assert [(r["prompt"], r["label"]) for r in rows(both, "kto.train.jsonl")] == [
        ("Good?", True),
        ("Bad?", False),
    ]
    assert [r["prompt"] for r in rows(both, "sft.train.jsonl")] == ["Good?"]


@pytest.fixture
def adjudicated(project, personas, experts, decide_item):
    """An item two experts disagreed on (accept vs reject), adjudicated with a new text."""
    project_settings_update(project=project, overlap=2)
    item = decide_item(
        project,
        [(experts[0], "accept", {}), (experts[1], "reject", {})],
        prompt="Disputed?",
        candidates=[("Maybe.", "m")],
    )
    assert ItemOutcome.objects.get(item=item).outcome == "needs_adjudication"
    item_adjudicate(
        item=item, manager=personas["manager"], outcome="accepted", final_text="Certainly."
    )
    return item


def test_adjudicated_outcomes_are_taken_with_the_adjudicators_text_and_lineage(
    project, personas, adjudicated, build
):
    version = build(project, personas["manager"], eval_fraction=0)
    assert rows(version, "sft.train.jsonl") == [{"prompt": "Disputed?", "completion": "Certainly."}]
    assert rows(version, "preference.train.jsonl") == [
        {"prompt": "Disputed?", "chosen": "Certainly.", "rejected": "Maybe."}
    ]
    lineage = read_jsonl(selectors.version_dir(version) / "sft.train.lineage.jsonl")
    reviews = list(adjudicated.reviews.order_by("id"))
    assert lineage == [
        {
            "row": 0,
            "texts": ["final"],
            "item": adjudicated.external_id,
            "item_id": adjudicated.pk,
            "decision": "correct",
            "outcome": "accepted",
            "outcome_source": "adjudicated",
            "agreement": 0.0,
            "adjudicated_by": personas["manager"].pk,
            "reviews": [r.pk for r in reviews],
            "experts": [r.expert_id for r in reviews],
            "guideline_versions": [None, None],
        }
    ]
    # leaving adjudicated outcomes out leaves nothing here
    with pytest.raises(ValidationError, match="nothing to build"):
        dataset_version_request(
            project=project,
            user=personas["manager"],
            params={"sources": ["unanimous", "majority"]},
        )


def test_lineage_names_reviews_experts_and_guideline_versions_row_by_row(
    project, personas, experts, decide_item, build
):
    from curation.services.settings import guideline_publish

    guideline_publish(project=project, text="Be exact.", created_by=personas["manager"])
    project_settings_update(project=project, overlap=2)
    item = decide_item(
        project,
        [(experts[0], "accept", {}), (experts[1], "accept", {})],
        external_id="ticket-7",
        candidates=[("Paris.", "m")],
    )
    version = build(project, personas["manager"], eval_fraction=0)
    lineage = read_jsonl(selectors.version_dir(version) / "kto.train.lineage.jsonl")
    reviews = list(item.reviews.order_by("id"))
    assert lineage[0]["item"] == "ticket-7"
    assert lineage[0]["reviews"] == [r.pk for r in reviews]
    assert lineage[0]["experts"] == [experts[0].pk, experts[1].pk]
    assert lineage[0]["guideline_versions"] == [1, 1]
    assert lineage[0]["texts"] == [f"candidate:{item.candidates.get().pk}"]
    assert lineage[0]["adjudicated_by"] is None


def test_filters_select_by_model_label_answer_gold_agreement_and_date(
    project, personas, experts, decide_item, build
):
    project_settings_update(
        project=project,
        label_schema=[
            {
                "key": "topic",
                "prompt": "Topic?",
                "type": "single_choice",
                "options": ["billing", "tech"],
            },
            {"key": "tags", "prompt": "Tags?", "type": "multiple_choice", "options": ["x", "y"]},
        ],
    )
    e = experts[0]
    a = decide_item(
        project,
        [(e, "accept", {"labels": {"topic": "billing", "tags": ["x", "y"]}})],
        prompt="A?",
        candidates=[("a", "old-model")],
    )
    decide_item(
        project,
        [(e, "accept", {"labels": {"topic": "tech", "tags": ["y"]}})],
        prompt="B?",
        candidates=[("b", "new-model")],
    )
    gold_set(item=a, actor=personas["manager"], verdict="accept")
    manager = personas["manager"]

    def prompts(**params):
        version = build(project, manager, eval_fraction=0, kinds=["sft"], **params)
        return [r["prompt"] for r in rows(version, "sft.train.jsonl")]

    assert prompts() == ["A?", "B?"]
    assert prompts(models=["new-model"]) == ["B?"]
    assert prompts(labels={"topic": "billing"}) == ["A?"]
    assert prompts(labels={"tags": "y"}) == ["A?", "B?"]
    assert prompts(labels={"tags": "x"}) == ["A?"]
    assert prompts(gold="exclude") == ["B?"]
    assert prompts(gold="only") == ["A?"]
    assert prompts(min_agreement=1) == ["A?", "B?"]
    today = timezone.localdate()
    assert prompts(date_from=today.isoformat(), date_to=today.isoformat()) == ["A?", "B?"]
    with pytest.raises(ValidationError, match="nothing to build"):
        dataset_version_request(
            project=project,
            user=manager,
            params={"date_to": (today - timedelta(days=1)).isoformat()},
        )
    with pytest.raises(ValidationError) as refused:
        dataset_version_request(
            project=project,
            user=manager,
            params={"labels": {"topic": "sports", "nope": "x"}, "eval_fraction": 2, "kinds": []},
        )
    assert set(refused.value.message_dict) == {
        "labels.topic",
        "labels.nope",
        "eval_fraction",
        "kinds",
    }


def test_minimum_agreement_leaves_out_majority_decisions_below_it(
    project, personas, experts, decide_item, build
):
    project_settings_update(project=project, overlap=3, outcome_rule="majority")
    decide_item(
        project,
        [(experts[0], "accept", {}), (experts[1], "accept", {}), (experts[2], "reject", {})],
        prompt="Split?",
        candidates=[("x", "m")],
    )
    decide_item(
        project,
        [(experts[0], "accept", {}), (experts[1], "accept", {}), (experts[2], "accept", {})],
        prompt="Agreed?",
        candidates=[("y", "m")],
    )
    version = build(project, personas["manager"], eval_fraction=0, kinds=["sft"], min_agreement=0.9)
    assert [r["prompt"] for r in rows(version, "sft.train.jsonl")] == ["Agreed?"]


def test_identical_rows_are_kept_once_and_lineage_is_renumbered(
    project, personas, experts, decide_item, build
):
    e = experts[0]
    for n in range(3):
        decide_item(
            project, [(e, "accept", {})], external_id=f"dup-{n}", candidates=[("Paris.", "m")]
        )
    decide_item(
        project, [(e, "accept", {})], external_id="other", prompt="Else?", candidates=[("X", "m")]
    )
    version = build(project, personas["manager"], eval_fraction=0, kinds=["sft", "kto"])
    assert [r["prompt"] for r in rows(version, "sft.train.jsonl")] == [
        "What is the capital of France?",
        "Else?",
    ]
    lineage = read_jsonl(selectors.version_dir(version) / "sft.train.lineage.jsonl")
    assert [(line["row"], line["item"]) for line in lineage] == [(0, "dup-0"), (1, "other")]
    assert version.manifest["duplicates_dropped"] == {"sft": 2, "kto": 2}
    entry = version.files[0]
    data = (selectors.version_dir(version) / entry["name"]).read_bytes()
    assert entry["rows"] == 2 and entry["bytes"] == len(data)
    assert entry["sha256"] == hashlib.sha256(data).hexdigest()
    kept = build(project, personas["manager"], eval_fraction=0, kinds=["sft", "kto"], dedup=False)
    assert len(rows(kept, "sft.train.jsonl")) == 4


def test_no_prompt_is_on_both_sides_of_the_split(project, personas, experts, decide_item, build):
    e = experts[0]
    for n in range(40):
        # the same prompt three times over, once with other case and spacing
        text = ["Question %d?", "question  %d?", "QUESTION %d? "][n % 3] % (n // 3)
        decide_item(project, [(e, "accept", {})], prompt=text, candidates=[(f"answer {n}", "m")])
    version = build(project, personas["manager"], eval_fraction=0.3, seed=3, kinds=["sft"])
    train = {normalised_prompt(r["prompt"], None) for r in rows(version, "sft.train.jsonl")}
    evals = {normalised_prompt(r["prompt"], None) for r in rows(version, "sft.eval.jsonl")}
    assert train and evals
    assert not train & evals
    assert len(train | evals) == 14
    other_seed = build(project, personas["manager"], eval_fraction=0.3, seed=4, kinds=["sft"])
    assert {
        normalised_prompt(r["prompt"], None) for r in rows(other_seed, "sft.eval.jsonl")
    } != evals


def file_digests(version) -> dict[str, str]:
    folder = selectors.version_dir(version)
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "manifest.json"
    }


def test_a_rebuild_after_deleting_the_version_gives_the_same_bytes_and_sha256(
    project, personas, experts, decide_item, compare_mode, build
):
    every_decision(project, experts[0], decide_item)
    first = build(
        project, personas["manager"], eval_fraction=0.3, seed=11, outcomes=["accepted", "rejected"]
    )
    digests, sha = file_digests(first), first.content_sha256
    assert len(sha) == 64 and digests
    folder = selectors.version_dir(first)
    dataset_version_delete(version=first)
    assert not DatasetVersion.objects.filter(pk=first.pk).exists()
    second = build(
        project, personas["admin"], eval_fraction=0.3, seed=11, outcomes=["accepted", "rejected"]
    )
    assert second.pk != first.pk
    assert second.content_sha256 == sha
    assert file_digests(second) == digests
    assert [f["sha256"] for f in second.files] == [f["sha256"] for f in first.files]
    # the manifest records who and when, outside the identity
    assert second.manifest["created_by"]["username"] == "ada-admin"
    assert folder != selectors.version_dir(second)


def test_the_same_request_over_the_same_decisions_returns_the_existing_version(
    project, personas, experts, decide_item, build
):
    decide_item(project, [(experts[0], "accept", {})], candidates=[("Paris.", "m")])
    manager = personas["manager"]
    first, created = dataset_version_request(project=project, user=manager, params={"seed": 5})
    assert created and first.status == DatasetStatus.QUEUED
    again, created_again = dataset_version_request(
        project=project, user=personas["admin"], params={"seed": 5, "eval_fraction": 0.1}
    )
    assert (again.pk, created_again) == (first.pk, False)
    dataset_version_build(version_id=first.pk)
    built, created_built = dataset_version_request(
        project=project, user=manager, params={"seed": 5}
    )
    assert (built.pk, created_built) == (first.pk, False)
    # another seed is another request; a new decision changes every request
    other, created_other = dataset_version_request(
        project=project, user=manager, params={"seed": 6}
    )
    assert created_other and other.pk != first.pk
    decide_item(project, [(experts[0], "accept", {})], prompt="New?", candidates=[("Yes.", "m")])
    fresh, created_fresh = dataset_version_request(
        project=project, user=manager, params={"seed": 5}
    )
    assert created_fresh and fresh.pk not in (first.pk, other.pk)


def test_the_build_task_delivered_twice_builds_once(project, personas, experts, decide_item):
    decide_item(project, [(experts[0], "accept", {})], candidates=[("Paris.", "m")])
    version, _ = dataset_version_request(project=project, user=personas["manager"], params={})
    dataset_build_task(version.pk)
    version.refresh_from_db()
    built_at, sha = version.finished_at, version.content_sha256
    dataset_build_task(version.pk)
    version.refresh_from_db()
    assert version.status == DatasetStatus.SUCCEEDED
    assert version.attempts == 1
    assert (version.finished_at, version.content_sha256) == (built_at, sha)
    assert DatasetVersion.objects.count() == 1
    dataset_build_task(version.pk + 1000)  # gone: nothing happens


def test_a_request_queues_the_build_after_commit(
    project, personas, experts, decide_item, django_capture_on_commit_callbacks, monkeypatch
):
    decide_item(project, [(experts[0], "accept", {})], candidates=[("Paris.", "m")])
    sent = []
    monkeypatch.setattr(dataset_build_task, "delay", lambda *args: sent.append(args))
    with django_capture_on_commit_callbacks(execute=True):
        version, _ = dataset_version_request(project=project, user=personas["manager"], params={})
    assert sent == [(version.pk,)]
    assert dataset_build_task.name == "training.dataset_build"
    from redline.celery import app

    assert app.amqp.router.route({}, "training.dataset_build")["queue"].name == "datasets"


def test_a_failure_mid_build_leaves_no_version_and_no_files(
    project, personas, experts, decide_item, build, monkeypatch, settings
):
    from training.services.writer import OutputFile

    for n in range(5):
        decide_item(project, [(experts[0], "accept", {})], prompt=f"Q{n}?", candidates=[("A", "m")])
    real_flush = OutputFile.flush
    calls = []

    def failing_flush(self, *args):  # the third file written: some are already on disk
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk full")
        return real_flush(self, *args)

    monkeypatch.setattr(OutputFile, "flush", failing_flush)
    version = build(project, personas["manager"])
    assert version.status == DatasetStatus.FAILED
    assert "OSError: disk full" in version.error
    assert not DatasetVersion.objects.filter(status=DatasetStatus.SUCCEEDED).exists()
    root = settings.STORAGE_DIR / "datasets"
    assert list(root.iterdir()) == []  # neither the version's folder nor a temporary one
    assert selectors.version_file_path(version, "sft.train.jsonl") is None
    # a failed build does not block the same request from being made again
    monkeypatch.setattr(OutputFile, "flush", real_flush)
    retry = build(project, personas["manager"])
    assert retry.pk != version.pk and retry.status == DatasetStatus.SUCCEEDED


def test_an_empty_selection_is_refused_and_nothing_is_saved(project, personas):
    with pytest.raises(ValidationError) as refused:
        dataset_version_request(project=project, user=personas["manager"], params={})
    assert refused.value.message_dict == {
        "filters": ["No final decisions match these filters: there is nothing to build."]
    }
    assert not DatasetVersion.objects.exists()


def test_a_version_that_lost_its_worker_is_taken_over_once_its_heartbeat_is_stale(
    project, personas, experts, decide_item
):
    decide_item(project, [(experts[0], "accept", {})], candidates=[("Paris.", "m")])
    version, _ = dataset_version_request(project=project, user=personas["manager"], params={})
    DatasetVersion.objects.filter(pk=version.pk).update(
        status=DatasetStatus.RUNNING, heartbeat_at=timezone.now(), attempts=1
    )
    assert dataset_version_build(version_id=version.pk) is None  # alive: left alone
    DatasetVersion.objects.filter(pk=version.pk).update(
        heartbeat_at=timezone.now() - timedelta(hours=1)
    )
    rebuilt = dataset_version_build(version_id=version.pk)
    assert rebuilt.status == DatasetStatus.SUCCEEDED and rebuilt.attempts == 2


def test_the_manifest_lists_files_counts_filters_and_provenance(
    project, personas, experts, decide_item, build
):
    decide_item(
        project,
        [(experts[0], "correct", {"corrected_output": "Paris, France."})],
        candidates=[("Paris.", "m")],
    )
    version = build(project, personas["manager"], eval_fraction=0, seed=9, models=["m"])
    folder = selectors.version_dir(version)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest == version.manifest
    assert manifest["project"] == {"id": project.pk, "slug": project.slug, "name": project.name}
    assert manifest["seed"] == 9 and manifest["eval_fraction"] == 0
    assert manifest["filters"]["models"] == ["m"]
    assert manifest["filters"]["outcomes"] == ["accepted"]
    assert manifest["counts"]["preference"] == {"train": 1, "eval": 0}
    assert manifest["created_by"]["username"] == "mona-manager"
    assert manifest["code_version"].startswith("redline ")
    assert manifest["content_sha256"] == version.content_sha256
    for entry in manifest["files"]:
        assert hashlib.sha256((folder / entry["name"]).read_bytes()).hexdigest() == entry["sha256"]
        lineage = folder / entry["lineage"]["name"]
        assert hashlib.sha256(lineage.read_bytes()).hexdigest() == entry["lineage"]["sha256"]
        assert len(read_jsonl(lineage)) == entry["rows"]


def test_versions_compare_by_rows_added_and_removed_per_kind(
    project, personas, experts, decide_item, build
):
    e = experts[0]
    decide_item(project, [(e, "accept", {})], prompt="One?", candidates=[("1", "old")])
    decide_item(project, [(e, "accept", {})], prompt="Two?", candidates=[("2", "new")])
    decide_item(
        project,
        [(e, "correct", {"corrected_output": "3!"})],
        prompt="Three?",
        candidates=[("3", "new")],
    )
    old = build(project, personas["manager"], eval_fraction=0, models=["old"])
    new = build(project, personas["manager"], eval_fraction=0, models=["new"])
    comparison = {
        c.kind: (c.added, c.removed, c.common) for c in selectors.version_compare(new, old)
    }
    assert comparison == {"sft": (2, 1, 0), "preference": (1, 0, 0), "kto": (3, 1, 0)}
    both = build(project, personas["manager"], eval_fraction=0)
    comparison = {
        c.kind: (c.added, c.removed, c.common) for c in selectors.version_compare(both, new)
    }
    assert comparison == {"sft": (1, 0, 2), "preference": (0, 0, 1), "kto": (1, 0, 3)}


def test_the_zip_holds_every_file_byte_for_byte(project, personas, experts, decide_item, build):
    decide_item(
        project,
        [(experts[0], "correct", {"corrected_output": "Paris!"})],
        candidates=[("Paris.", "m")],
    )
    version = build(project, personas["manager"], eval_fraction=0)
    data = b"".join(selectors.version_archive(version, chunk_size=64))
    folder = selectors.version_dir(version)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = archive.namelist()
        assert names == [f"dataset-{version.pk}/{n}" for n in selectors.version_file_names(version)]
        for name in names:
            assert archive.read(name) == (folder / name.split("/", 1)[1]).read_bytes()


def test_versions_of_other_projects_are_separate(personas, experts, decide_item, build, project):
    other = ProjectFactory()
    membership_add(other, experts[0], "expert")
    decide_item(project, [(experts[0], "accept", {})], candidates=[("Paris.", "m")])
    decide_item(other, [(experts[0], "accept", {})], prompt="Elsewhere?", candidates=[("x", "m")])
    version = build(project, personas["manager"], eval_fraction=0, kinds=["sft"])
    assert [r["prompt"] for r in rows(version, "sft.train.jsonl")] == [
        "What is the capital of France?"
    ]


def _split_builds(monkeypatch, project, user, build, **params):
    """The same request built by one process, then (the first deleted) by two."""
    from training.services import datasets, parallel

    started = []
    real_start = parallel.UpperHalf.start

    def start(*args, **kwargs):
        started.append(args[2])  # the split point
        return real_start(*args, **kwargs)

    monkeypatch.setattr(parallel.UpperHalf, "start", start)
    monkeypatch.setattr(datasets, "BUILD_WORKERS", 1)
    one = build(project, user, **params)
    assert one.status == DatasetStatus.SUCCEEDED, one.error
    assert started == []
    single = (file_digests(one), one.content_sha256, one.row_counts, one.manifest["decisions"])
    single_dropped = one.manifest["duplicates_dropped"]
    dataset_version_delete(version=one)
    monkeypatch.setattr(datasets, "BUILD_WORKERS", 2)
    monkeypatch.setattr(datasets, "PARALLEL_MIN_ITEMS", 0)
    monkeypatch.setattr(datasets, "_spare_core", lambda: True)  # whatever the machine's load
    two = build(project, user, **params)
    return single, single_dropped, two, started


@pytest.mark.django_db(transaction=True)
def test_a_build_split_between_two_processes_gives_the_bytes_of_one(
    project, personas, experts, decide_item, compare_mode, build, monkeypatch
):
    every_decision(project, experts[0], decide_item)
    every_decision(project, experts[0], decide_item, chat=True)
    # the same rows again in the upper half: dropped there, as one process drops them
    decide_item(
        project, [(experts[0], "accept", {})], prompt="Q-accept", candidates=[("A-accept", "m1")]
    )
    params = {"eval_fraction": 0.3, "seed": 5, "outcomes": ["accepted", "rejected"]}
    single, single_dropped, two, started = _split_builds(
        monkeypatch, project, personas["manager"], build, **params
    )
    assert len(started) == 1  # the second build did fork its upper half
    assert two.status == DatasetStatus.SUCCEEDED, two.error
    assert (file_digests(two), two.content_sha256, two.row_counts, two.manifest["decisions"]) == (
        single
    )
    assert two.manifest["duplicates_dropped"] == single_dropped
    assert single_dropped["sft"] >= 1
    assert two.manifest["decisions"]["selected"] == ItemOutcome.objects.count()
    # lineage row numbers run on across the two halves
    lineage = read_jsonl(selectors.version_dir(two) / "kto.train.lineage.jsonl")
    assert [r["row"] for r in lineage] == list(range(len(lineage)))
    root = selectors.version_dir(two)
    assert not any(p.name == "upper" for p in root.parent.rglob("*"))  # no part files left


@pytest.mark.django_db(transaction=True)
def test_a_failure_in_the_second_process_fails_the_build_and_leaves_nothing(
    project, personas, experts, decide_item, build, monkeypatch, settings
):
    from training.services import datasets
    from training.services.writer import PartFile

    for n in range(6):
        decide_item(project, [(experts[0], "accept", {})], prompt=f"Q{n}?", candidates=[("A", "m")])

    def failing_flush(self, *args):
        raise OSError("disk full in the helper")

    monkeypatch.setattr(PartFile, "flush", failing_flush)  # only the forked process has parts
    monkeypatch.setattr(datasets, "PARALLEL_MIN_ITEMS", 0)
    monkeypatch.setattr(datasets, "BUILD_WORKERS", 2)
    monkeypatch.setattr(datasets, "_spare_core", lambda: True)
    version = build(project, personas["manager"])
    assert version.status == DatasetStatus.FAILED
    assert "second process failed: OSError: disk full in the helper" in version.error
    assert list((settings.STORAGE_DIR / "datasets").iterdir()) == []


@pytest.mark.parametrize("chat", [False, True])
def test_the_manifest_counts_taken_from_the_stream_match_the_live_count(
    project, personas, experts, decide_item, compare_mode, build, chat
):
    """The build tallies the decisions as they stream by instead of counting them in SQL
    again: the same numbers as the form's live count (``selectors.selection_summary``)."""
    every_decision(project, experts[0], decide_item, chat=chat)
    version = build(project, personas["manager"], **ALL)
    assert version.status == DatasetStatus.SUCCEEDED, version.error
    live = selectors.selection_summary(project=project, filters=version.params["filters"])
    assert version.manifest["decisions"] == {
        "selected": live.total,
        "accepted": live.accepted,
        "corrected": live.corrected,
        "compared": live.compared,
        "ties": live.ties,
        "rejected": live.rejected,
    }
    assert live.rejected == 1 and live.ties == 1 and live.compared >= 2 and live.corrected >= 2
    assert version.format == ("conversational" if chat else "standard")
