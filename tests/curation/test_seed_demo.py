import re

import pytest
from django.contrib.auth import authenticate
from django.core.management import call_command

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
