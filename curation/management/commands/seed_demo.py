"""Create the demo users and project. Safe to run again: users get fresh passwords.

``--loop`` (what ``make demo`` runs) also seeds what the training loop needs on a fresh
project: expert2 and expert1 give first and second opinions on more items, so that most of
them have final decisions, and a first dataset version is built from them (through the same
services as the web pages), so an admin can train an adapter at once."""

from __future__ import annotations

import secrets
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from curation.models import ImportStatus, Project
from curation.services import imports as import_services
from curation.services import projects as services
from curation.services.settings import guideline_publish, project_settings_update

DEMO_USERS = [
    # username, role in the demo project (None: admin, i.e. staff), display name
    ("admin", None, "Ada Admin"),
    ("manager", "manager", "Mona Manager"),
    ("expert1", "expert", "Erin Expert"),
    ("expert2", "expert", "Ezra Expert"),
    ("expert3", "expert", "Eli Expert"),
]
DEMO_GUIDELINES = """# Reviewing support answers

- **Accept** an answer that is correct, complete and polite as it stands.
- **Correct** it when a fact, a step or the tone needs fixing: edit the text itself.
- **Reject** answers that are unsafe or beyond repair, and say why in the rationale.
- When two drafts are shown, pick the one you would rather send (or a tie).
"""
DEMO_LABELS = [
    {
        "key": "tone",
        "prompt": "Tone of the answer",
        "type": "single_choice",
        "options": ["friendly", "neutral", "curt"],
        "required": True,
    },
    {
        "key": "helpfulness",
        "prompt": "How helpful is it?",
        "type": "rating",
        "scale": 5,
        "required": False,
    },
]
DEMO_SLUG = "support-answers"
DEMO_ITEMS = Path(__file__).resolve().parents[2] / "demo" / "support_answers.jsonl"
# ``--loop``: expert2 reviews the first LOOP_ITEMS items of the queue (a second opinion on
# expert3's, a first one on the rest) and expert1 gives the second opinion on the rest; the
# items after those stay open for the visitors. One of expert3's decisions gets a dissent,
# for the adjudication page.
LOOP_ITEMS = 30
# The first dataset version: every decision kind, with an eval split large enough to hold a
# few prompts for an evaluation round (the default 0.1 would leave two or three).
LOOP_VERSION = {"kinds": ["sft", "preference", "kto"], "eval_fraction": 0.25, "seed": 0}


class Command(BaseCommand):
    help = (
        "Create demo users (admin, manager, three experts) and a demo project; print passwords. "
        "--loop: also decisions by every expert and a first dataset version."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--loop",
            action="store_true",
            help="on a fresh project, also seed decisions by expert1 and expert2 and build a "
            "first dataset version from them",
        )

    def handle(self, *args, loop=False, **options):
        project, fresh, users, passwords = self._seed(loop=loop)
        if fresh and loop:
            # Outside the seeding transaction: on SQLite a build reads in its own snapshot.
            self._seed_version(project, users["manager"][0])
        self.stdout.write("Demo users (passwords are new on every run):")
        for username, role, _ in DEMO_USERS:
            self.stdout.write(
                f"  {username:<9} {role or 'admin':<8} password: {passwords[username]}"
            )

    @transaction.atomic
    def _seed(self, *, loop: bool):
        User = get_user_model()
        passwords = {}
        users = {}
        for username, role, full_name in DEMO_USERS:
            first, last = full_name.split(" ", 1)
            user, _ = User.objects.get_or_create(
                username=username,
                defaults={"first_name": first, "last_name": last, "email": f"{username}@demo.test"},
            )
            user.is_staff = user.is_superuser = role is None
            passwords[username] = secrets.token_urlsafe(9)
            user.set_password(passwords[username])
            user.save()
            users[username] = (user, role)

        project = Project.objects.filter(slug=DEMO_SLUG).first()
        fresh = project is None
        if project is None:
            project = services.project_create(
                name="Support answers",
                slug=DEMO_SLUG,
                description=(
                    "Answers a support assistant drafted for customer questions. "
                    "Accept good ones, correct the rest, and pick the better of two drafts."
                ),
                created_by=users["admin"][0],
            )
            project_settings_update(
                project=project,
                review_modes=["correct", "compare", "label"],
                label_schema=DEMO_LABELS,
                overlap=2,
            )
            guideline_publish(project=project, text=DEMO_GUIDELINES, created_by=users["admin"][0])
        for username, (_user, role) in users.items():
            if role is not None:
                services.membership_set(project=project, username=username, role=role)

        self.stdout.write(
            self.style.SUCCESS(f"Demo project: {project.name} (/projects/{project.slug}/)")
        )
        # Through the import service, like a manager's upload: a second run skips every item.
        job = import_services.import_job_create(
            project=project,
            created_by=users["admin"][0],
            filename=DEMO_ITEMS.name,
            path=DEMO_ITEMS,
        )
        job = import_services.import_job_run(job_id=job.pk)
        if job.status != ImportStatus.SUCCEEDED:
            raise RuntimeError(f"The demo items did not import: {job.message} {job.errors}")
        self.stdout.write(
            f"Demo items: imported {job.imported_count}, skipped {job.skipped_count} already there."
        )
        if fresh:
            decided = self._seed_history(project, users["expert3"][0])
            self.stdout.write(f"Demo history: expert3 decided {decided} items.")
            if loop:
                final = self._seed_opinions(project, users["expert2"][0], users["expert1"][0])
                self.stdout.write(
                    f"Demo history: expert1 and expert2 reviewed too; {final} items have "
                    "final decisions."
                )
        return project, fresh, users, passwords

    def _seed_history(self, project, expert) -> int:
        """A first expert's decisions on a dozen items, so the queue, dashboard and
        adjudication pages have something to show; the other experts give the second opinions."""
        from curation.services.queue import queue_claim_next
        from feedback.services import review_submit

        plan = [
            "accept",
            "correct",
            "accept",
            "reject",
            "accept",
            "accept",
            "correct",
            "accept",
            "skip",
            "accept",
            "reject",
            "accept",
        ]
        decided = 0
        for verdict in plan:
            claim = queue_claim_next(project=project, expert=expert)
            if claim is None:
                break
            item = claim.item
            candidates = list(item.candidates.order_by("position"))
            fields = {"labels": {"tone": "neutral", "helpfulness": 3}}
            if len(candidates) > 1 and verdict in ("accept", "correct"):
                fields["preferred_candidate"] = candidates[0].pk
            if verdict == "correct":
                target = candidates[0]
                fields["corrected_output"] = (
                    target.output.rstrip(".") + ". Anything else I can help with?"
                )
                fields["candidate"] = target.pk
            if verdict == "reject":
                fields["rationale"] = "Promises something our policy does not allow."
            if verdict == "skip":
                fields = {"rationale": "Billing question: not my area."}
            review_submit(item=item, expert=expert, verdict=verdict, time_spent_ms=23_000, **fields)
            decided += verdict != "skip"
        return decided

    def _seed_opinions(self, project, expert2, expert1) -> int:
        """expert2 takes the first ``LOOP_ITEMS`` items of their queue: on expert3's it agrees
        (but rejects one that expert3 accepted, which leaves it to adjudicate), on the others
        it decides afresh; expert1 then agrees with expert2 on each of those. Returns how
        many items have a final (non-adjudication) outcome."""
        from curation.services.queue import queue_claim_next, queue_lease_release
        from feedback.models import ItemOutcome, Outcome, Review
        from feedback.services import review_submit

        dissent = False
        for n in range(LOOP_ITEMS):
            claim = queue_claim_next(project=project, expert=expert2)
            if claim is None:
                break
            item = claim.item
            candidates = list(item.candidates.order_by("position"))
            prior = Review.objects.filter(item=item, expert__username="expert3").first()
            if prior is not None and prior.verdict != "skip":
                fields = _same_as(prior)
                if not dissent and prior.verdict == "accept":
                    fields |= {
                        "verdict": "reject",
                        "rationale": "Too vague: the customer asked for the steps.",
                    }
                    dissent = True
            else:
                fields = _fresh(n, candidates)
            review_submit(item=item, expert=expert2, time_spent_ms=19_000, **fields)
        while (claim := queue_claim_next(project=project, expert=expert1)) is not None:
            prior = Review.objects.filter(item=claim.item, expert=expert2).first()
            if prior is None:  # past expert2's items: leave the rest to the visitors
                queue_lease_release(item=claim.item, expert=expert1)
                break
            review_submit(item=claim.item, expert=expert1, time_spent_ms=21_000, **_same_as(prior))
        return (
            ItemOutcome.objects.filter(project=project)
            .exclude(outcome=Outcome.NEEDS_ADJUDICATION)
            .count()
        )

    def _seed_version(self, project, manager) -> None:
        """The first dataset version, built here the way the datasets worker builds one."""
        from training.models import DatasetStatus
        from training.services import dataset_version_build, dataset_version_request

        version, _ = dataset_version_request(
            project=project, user=manager, params=LOOP_VERSION, via="cli", enqueue=False
        )
        if version.status == DatasetStatus.QUEUED:
            version = dataset_version_build(version_id=version.pk) or version
        version.refresh_from_db()
        if version.status != DatasetStatus.SUCCEEDED:
            raise RuntimeError(f"The demo dataset version did not build: {version.error}")
        splits = {
            split: sum(c.get(split, 0) for c in version.row_counts.values())
            for split in ("train", "eval")
        }
        self.stdout.write(
            f"Demo dataset version {version.pk}: {version.items_total} decisions, "
            f"{splits['train']} train rows and {splits['eval']} eval rows."
        )


def _same_as(review) -> dict:
    """The fields of a second opinion that agrees with ``review``."""
    return {
        "verdict": review.verdict,
        "candidate": review.candidate_id,
        "corrected_output": review.corrected_output,
        "preferred_candidate": review.preferred_candidate_id,
        "tie": review.tie,
        "labels": review.labels,
        "rationale": review.rationale,
    }


def _fresh(n: int, candidates) -> dict:
    """A first opinion on an item: mostly accepts (preferring one draft of two), a correction
    every fifth item, a rejection every seventh."""
    first = candidates[0]
    labels = {"tone": ("friendly", "neutral", "curt")[n % 3], "helpfulness": n % 5 + 1}
    fields = {"verdict": "accept", "labels": labels}
    if len(candidates) > 1:
        fields["preferred_candidate"] = candidates[n % 2].pk
    if n % 7 == 3:
        return {
            "verdict": "reject",
            "labels": labels,
            "rationale": "Promises a refund the policy does not allow.",
        }
    if n % 5 == 1:
        target = candidates[n % 2] if len(candidates) > 1 else first
        fields |= {
            "verdict": "correct",
            "candidate": target.pk,
            "corrected_output": target.output.rstrip(".") + ": the steps are in our help centre.",
        }
    return fields
