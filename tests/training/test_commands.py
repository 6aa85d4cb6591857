"""build_dataset and export_dataset."""

from __future__ import annotations

import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from training.models import DatasetVersion

pytestmark = pytest.mark.django_db


@pytest.fixture
def decided(project, experts, decide_item):
    decide_item(
        project,
        [(experts[0], "correct", {"corrected_output": "Paris, France."})],
        candidates=[("Paris.", "m")],
    )
    decide_item(project, [(experts[0], "accept", {})], prompt="Two?", candidates=[("2", "m")])


def test_build_dataset_builds_in_process_and_prints_the_files(project, personas, decided, capsys):
    args = ["--kinds", "sft", "preference", "--eval-fraction", "0", "--seed", "3"]
    call_command(
        "build_dataset", project.slug, *args, "--system-prompt", "Hi.", "--user", "mona-manager"
    )
    out = capsys.readouterr().out
    version = DatasetVersion.objects.get()
    assert version.status == "succeeded" and version.created_via == "cli"
    assert version.created_by == personas["manager"]
    assert version.kinds == ["sft", "preference"] and version.seed == 3
    assert version.params["options"]["system_prompt"] == "Hi."
    assert f"Version {version.pk}: 3 rows from 2 decisions, sha256 {version.content_sha256}" in out
    assert "sft.train.jsonl: 2 rows" in out
    call_command("build_dataset", project.slug, *args, "--system-prompt", "Hi.")
    assert "was already asked for" in capsys.readouterr().out
    assert DatasetVersion.objects.count() == 1


def test_build_dataset_takes_every_filter(project, personas, decided, capsys):
    call_command(
        "build_dataset",
        project.slug,
        "--outcomes",
        "accepted",
        "rejected",
        "--sources",
        "unanimous",
        "--min-agreement",
        "0.5",
        "--from",
        "2000-01-01",
        "--to",
        "2999-12-31",
        "--models",
        "m",
        "--gold",
        "exclude",
        "--no-dedup",
        "--min-edit-chars",
        "0",
    )
    version = DatasetVersion.objects.get()
    assert version.params["filters"] == {
        "outcomes": ["accepted", "rejected"],
        "sources": ["unanimous"],
        "min_agreement": 0.5,
        "date_from": "2000-01-01",
        "date_to": "2999-12-31",
        "models": ["m"],
        "labels": {},
        "gold": "exclude",
    }
    assert version.params["options"] == {"dedup": False, "min_edit_chars": 0, "system_prompt": ""}


def test_build_dataset_refuses_bad_requests_clearly(project, decided):
    with pytest.raises(CommandError, match="No project"):
        call_command("build_dataset", "no-such-project")
    with pytest.raises(CommandError, match="No user"):
        call_command("build_dataset", project.slug, "--user", "nobody")
    with pytest.raises(CommandError, match="eval_fraction"):
        call_command("build_dataset", project.slug, "--eval-fraction", "0.9")
    with pytest.raises(CommandError, match="KEY=ANSWER"):
        call_command("build_dataset", project.slug, "--label", "tone")
    with pytest.raises(CommandError, match="nothing to build"):
        call_command("build_dataset", project.slug, "--models", "other")
    with pytest.raises(CommandError, match="give no rows for preference"):
        call_command(
            "build_dataset",
            project.slug,
            "--kinds",
            "preference",
            "--models",
            "m",
            "--min-edit-chars",
            "1000",
        )
    assert list(DatasetVersion.objects.values_list("status", flat=True)) == ["failed"]


def test_build_dataset_can_queue_instead(
    project, decided, capsys, django_capture_on_commit_callbacks, monkeypatch
):
    from training.tasks import dataset_build_task

    sent = []
    monkeypatch.setattr(dataset_build_task, "delay", lambda *a: sent.append(a))
    with django_capture_on_commit_callbacks(execute=True):
        call_command("build_dataset", project.slug, "--queue")
    version = DatasetVersion.objects.get()
    assert version.status == "queued" and sent == [(version.pk,)]
    assert "is queued on the datasets queue" in capsys.readouterr().out


@pytest.mark.slow
def test_export_dataset_writes_a_datasetdict_per_kind(
    project, personas, decided, build, tmp_path, capsys
):
    import datasets

    version = build(project, personas["manager"], eval_fraction=0.5, seed=2)
    target = tmp_path / "hf"
    call_command("export_dataset", str(version.pk), "--format", "hf", str(target))
    for kind in ("sft", "preference", "kto"):
        loaded = datasets.load_from_disk(str(target / kind))
        assert isinstance(loaded, datasets.DatasetDict)
        for split, dataset in loaded.items():
            assert len(dataset) == version.row_counts[kind][split]
    assert (
        json.loads((target / "manifest.json").read_text())["content_sha256"]
        == version.content_sha256
    )
    assert f"Version {version.pk} exported" in capsys.readouterr().out
    with pytest.raises(CommandError, match="not empty"):
        call_command("export_dataset", str(version.pk), str(target))
    with pytest.raises(CommandError, match="No dataset version"):
        call_command("export_dataset", "999999", str(tmp_path / "x"))
