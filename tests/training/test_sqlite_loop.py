"""The whole loop on the demo's embedded defaults (SQLite, the filesystem broker), as
``make demo`` runs it: ``prepare_models tiny`` and ``seed_demo --loop``, then from the pages
a training run on the seeded dataset version, Try it, an evaluation round judged by two
experts and closed by the beat check, a promotion with override and the current-model API;
then a retraining policy whose beats start a cycle and take it to its evaluation round. The
row locks these services take (``FOR UPDATE``, ``SKIP LOCKED``, ``FOR NO KEY UPDATE``) are
PostgreSQL's; on SQLite the write transaction (IMMEDIATE) serialises them instead, and this
test is what says those paths run there at all.

Each task runs in the snippet's process through the task function the worker calls (what
the page queued lands in the broker's folder, and is checked there)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.redline.subprocess_env import ROOT
from tests.training.ml.conftest import tiny_dir  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow

SQLITE_LOOP = r"""
import io, json, os, re
from pathlib import Path
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection
from django.test import Client

assert connection.vendor == "sqlite"
models = Path(settings.STORAGE_DIR) / "models"
models.mkdir(parents=True)
os.symlink(os.environ["TINY_DIR"], models / "tiny")
call_command("migrate", verbosity=0, interactive=False)
out = io.StringIO()
call_command("prepare_models", "tiny", stdout=out)  # make demo's step: present, so registered
call_command("seed_demo", "--loop", stdout=out)
call_command("seed_demo", "--loop", stdout=out)  # a second make demo: nothing more
report = {"seed": out.getvalue()}

from curation.models import Project
from curation.services.queue import queue_claim_next
from feedback.services import review_submit
from training.models import (Adapter, DatasetVersion, EvaluationItem, EvaluationRound,
    GenerationJob, RetrainingCycle, TrainingRun)
from training.services.evaluation import evaluation_round_create, evaluation_rounds_check
from training.services.policies import cycles_advance, policies_check, policy_update
from training.tasks import dataset_build_task, generate_job_task, train_run_task

User = get_user_model()
admin, expert1, expert2 = (User.objects.get(username=n) for n in ("admin", "expert1", "expert2"))
project = Project.objects.get(slug="support-answers")
version = DatasetVersion.objects.get()
report["version"] = [version.status, version.row_counts, version.created_via]
web = Client()
web.force_login(admin)
p = f"/projects/{project.slug}"
queued = lambda: len(list((Path(settings.VAR_DIR) / "broker" / "queue").iterdir()))

# a training run launched from the version page, trained by the task
page = web.get(f"{p}/datasets/{version.pk}/")
tiny = re.search(r'<option value="(\d+)"[^>]*>\s*tiny', page.content.decode()).group(1)
posted = web.post(f"{p}/datasets/{version.pk}/train/", {
    "base_model": tiny, "method": "sft", "lora_r": "8", "lora_alpha": "16",
    "learning_rate": "0.003", "num_epochs": "1", "max_steps": "4", "batch_size": "8"})
run = TrainingRun.objects.get()
report["train"] = [page.status_code, posted.status_code, queued()]
train_run_task(run.pk)
run.refresh_from_db()
adapter = Adapter.objects.get(run=run)
report["run"] = [run.status, run.error, run.total_steps]

# Try it on the adapter page
tried = web.post(f"{p}/adapters/{adapter.pk}/try-it/", {"prompt": "How do I reset my password?"})
job = GenerationJob.objects.get(purpose="try_it")
generate_job_task(job.pk)
result = web.get(f"{p}/adapters/{adapter.pk}/try-it/{job.pk}/")
job.refresh_from_db()
report["try_it"] = [tried.status_code, job.status, job.error, result.status_code,
                    result.content.decode().count("tiny + adapter"), job.outputs.count()]

# an evaluation round against the base model, judged by expert1 and expert2 (each first
# decides the demo items still open for them: the queue is oldest first)
round_ = evaluation_round_create(subject=adapter, baseline="base", limit=3, created_by=admin,
    pass_rule={"min_judged": 3}, decoding={"max_new_tokens": 8, "temperature": 0})
generate_job_task(round_.generation_job_id)
round_.refresh_from_db()
report["round_generated"] = [round_.status, round_.error]
links = {e.item_id: e for e in EvaluationItem.objects.filter(round=round_)}
judged = 0
for expert in (expert1, expert2):
    while (claim := queue_claim_next(project=project, expert=expert)) is not None:
        item = claim.item
        cands = list(item.candidates.order_by("position"))
        link = links.get(item.pk)
        chosen = cands[link.subject_position] if link else cands[0]
        fields = {"preferred_candidate": chosen.pk} if len(cands) > 1 else {}
        review_submit(item=item, expert=expert, verdict="accept",
                      labels={"tone": "friendly"}, **fields)
        judged += link is not None
report["judged"] = judged
report["rounds_check"] = evaluation_rounds_check()
round_.refresh_from_db()
report["round"] = [round_.status, round_.wins, round_.ties, round_.losses, round_.passed]

# promote from the Models page (override: 3 of 3 is too few to pass), read the current model
promoted = web.post(f"{p}/models/promote/", {"adapter": adapter.pk, "override": "on",
                                              "reason": "Only three held-out prompts."})
from rest_framework.authtoken.models import Token
key = Token.objects.get_or_create(user=expert1)[0].key
current = Client().get(f"/api/v1/projects/{project.slug}/current-model/",
                       HTTP_AUTHORIZATION=f"Token {key}")
report["promoted"] = [promoted.status_code, current.status_code, current.json()]

# a retraining policy: the beats start a cycle (new accepted decisions: the round's items)
# and advance it through a dataset build and a training run to its evaluation round
policy_update(project=project, user=admin, enabled=True, min_new_decisions=1, on_drift=False,
              require_approval=False)
started = policies_check()
again = policies_check()  # one cycle in flight per project
steps = [cycles_advance()]
cycle = RetrainingCycle.objects.get()
dataset_build_task(cycle.dataset_version_id)
steps.append(cycles_advance())
cycle.refresh_from_db()
train_run_task(cycle.training_run_id)
steps.append(cycles_advance())
cycle.refresh_from_db()
report["cycle"] = [len(started), len(again), steps, cycle.status, cycle.step, cycle.error,
                   cycle.dataset_version.status, cycle.training_run.status,
                   cycle.evaluation_round.status if cycle.evaluation_round else None,
                   cycle.evaluation_round.trigger if cycle.evaluation_round else None]
print(json.dumps(report))
"""


def test_the_demo_loop_runs_on_sqlite_and_the_filesystem_broker(tmp_path, tiny_dir):  # noqa: F811
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "redline.settings"}
    for name in ("DATABASE_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"):
        env.pop(name, None)  # the demo's embedded defaults, under REDLINE_VAR_DIR
    env |= {
        "REDLINE_DEBUG": "1",
        "REDLINE_VAR_DIR": str(tmp_path),
        "REDLINE_STORAGE_DIR": str(tmp_path / "storage"),
        "TINY_DIR": str(tiny_dir),
    }
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()\n" + SQLITE_LOOP],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert (tmp_path / "redline.sqlite3").is_file()

    # make demo's preparation: tiny registered, decisions by every expert, a first version
    # with a train and an eval split, built once (the second seed_demo adds nothing)
    seed = report["seed"]
    assert "tiny: already in" in seed and "registered as base model 'tiny'" in seed
    assert seed.count("Demo history: expert1 and expert2 reviewed too") == 1
    assert seed.count("Demo dataset version") == 1
    status, row_counts, via = report["version"]
    assert status == "succeeded" and via == "cli"
    assert row_counts["sft"]["train"] > 0 and row_counts["sft"]["eval"] > 0

    page, posted, queued = report["train"]
    assert (page, posted) == (200, 302)
    assert queued == 1  # the run's message, for the demo's worker
    assert report["run"] == ["succeeded", "", 4]

    tried, job_status, job_error, shown, adapter_panels, outputs = report["try_it"]
    assert (tried, job_status, job_error, shown) == (200, "succeeded", "", 200)
    assert adapter_panels == 1 and outputs == 2  # base alone, base + adapter

    assert report["round_generated"] == ["judging", ""]
    assert report["judged"] == 6  # 3 blind items, 2 experts each
    assert report["rounds_check"].get("closed") == 1, report["rounds_check"]
    assert report["round"] == ["complete", 3, 0, 0, False]

    promoted, current_status, current = report["promoted"]
    assert (promoted, current_status) == (302, 200)
    assert current["base_model"]["name"] == "tiny" and current["override"] is True
    assert current["adapter"]["id"] and current["evaluation_round"] is None

    started, again, steps, status, step, error, built, trained, evaluating, trigger = report[
        "cycle"
    ]
    assert (started, again) == (1, 0)
    assert error == "" and status == "running" and step == "evaluation", report["cycle"]
    assert (built, trained) == ("succeeded", "succeeded")
    assert (evaluating, trigger) == ("generating", "policy")
    assert all(steps), steps
