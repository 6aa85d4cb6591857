import re

import pytest
from django.contrib.auth import authenticate
from django.core.management import call_command
from django.db.models import Count

from curation.models import Membership, Project


@pytest.mark.django_db
def test_seed_demo_creates_users_and_project_and_can_run_again(capsys):
    call_command("seed_demo")
    call_command("seed_demo")
    out = capsys.readouterr().out
    project = Project.objects.get(slug="support-answers")
    roles = dict(Membership.objects.filter(project=project).values_list("user__username", "role"))
    assert roles == {
        "manager": "manager",
        "expert1": "expert",
        "expert2": "expert",
        "expert3": "expert",
    }
    # a fresh demo has review settings, guidelines and a first expert's history (once)
    assert project.overlap == 2 and "compare" in project.review_modes
    assert project.guidelines.count() == 1
    from feedback.models import Review

    assert Review.objects.filter(expert__username="expert3").count() == 12
    assert "Demo history: expert3 decided 11 items." in out
    # the passwords printed last are the ones that work
    last_run = out.rsplit("Demo users", 1)[1]
    printed = dict(re.findall(r"^\s+(\S+)\s+\S+\s+password: (\S+)$", last_run, re.M))
    assert set(printed) == {"admin", "manager", "expert1", "expert2", "expert3"}
    assert authenticate(username="expert1", password=printed["expert1"]) is not None
    assert authenticate(username="admin", password=printed["admin"]).is_staff


@pytest.mark.django_db
def test_seed_demo_loop_seeds_decisions_and_a_dataset_version_once(capsys, settings, tmp_path):
    """``make demo``'s seeding: enough final decisions for a version with a train and an eval
    split, one disagreement to adjudicate, items left open for the visitors, and a first
    version built through the real services; a second run adds nothing."""
    from feedback.models import ItemOutcome, Outcome, Review
    from training.models import DatasetVersion

    settings.STORAGE_DIR = tmp_path
    call_command("seed_demo", "--loop")
    call_command("seed_demo", "--loop")
    out = capsys.readouterr().out
    project = Project.objects.get(slug="support-answers")
    reviews = dict(
        Review.objects.filter(item__project=project)
        .values_list("expert__username")
        .annotate(n=Count("id"))
        .values_list("expert__username", "n")
    )
    assert reviews == {"expert3": 12, "expert2": 30, "expert1": 19}
    outcomes = dict(
        ItemOutcome.objects.filter(project=project)
        .values_list("outcome")
        .annotate(n=Count("item"))
        .values_list("outcome", "n")
    )
    assert outcomes == {Outcome.ACCEPTED: 25, Outcome.REJECTED: 4, Outcome.NEEDS_ADJUDICATION: 1}
    assert out.count("29 items have final decisions.") == 1
    # the rest is left for the visitors, and the evaluation rounds after them
    assert project.items.count() - sum(outcomes.values()) == 10
    (version,) = DatasetVersion.objects.filter(project=project)
    assert version.status == "succeeded", version.error
    assert version.created_via == "cli" and version.items_total == 25
    for kind in ("sft", "preference", "kto"):
        assert version.row_counts[kind]["train"] > 0 and version.row_counts[kind]["eval"] > 0
    assert out.count(f"Demo dataset version {version.pk}: 25 decisions") == 1
    assert (tmp_path / version.storage_path / "sft.eval.jsonl").is_file()
