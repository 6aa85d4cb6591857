"""Create the demo users and project. Safe to run again: users get fresh passwords."""

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


class Command(BaseCommand):
    help = "Create demo users (admin, manager, two experts) and a demo project; print passwords."

    @transaction.atomic
    def handle(self, *args, **options):
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
        self.stdout.write("Demo users (passwords are new on every run):")
        for username, role, _ in DEMO_USERS:
            self.stdout.write(
                f"  {username:<9} {role or 'admin':<8} password: {passwords[username]}"
            )

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
