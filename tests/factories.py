"""factory_boy factories. Domain rows are built through services, so tests see the real rules."""

from __future__ import annotations

import factory
from django.contrib.auth import get_user_model

from curation.services import projects as services

PASSWORD = "correct horse battery staple"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.org")

    @factory.post_generation
    def password(self, create, extracted, **kwargs):
        self.set_password(extracted or PASSWORD)
        if create:
            self.save(update_fields=["password"])


class ProjectFactory(factory.Factory):
    """Builds through ``services.project_create``."""

    class Meta:
        model = dict

    name = factory.Sequence(lambda n: f"Project {n}")
    description = "Review of model answers."

    @classmethod
    def _create(cls, model_class, **kwargs):
        created_by = kwargs.pop("created_by", None) or UserFactory(is_staff=True)
        return services.project_create(created_by=created_by, **kwargs)

    _build = _create


def membership_add(project, user, role: str):
    membership, _ = services.membership_set(project=project, username=user.username, role=role)
    return membership


_item_seq = iter(range(1, 10**9))


def item_add(
    project,
    *,
    external_id: str | None = None,
    prompt: str = "What is the capital of France?",
    messages: list[dict] | None = None,
    candidates: list[tuple[str, str]] | None = None,
    metadata: dict | None = None,
    priority: int = 0,
    source: str = "api",
    status: str = "open",
    created_at=None,
):
    """An item with its candidates (``[(output, model), ...]``), as an import would leave it.

    Rows are written directly: the import service validates files, and these tests need
    items whose text is exactly what they say (hostile text included). ``created_at`` can be
    back-dated for date-filter tests.
    """
    from curation.models import Candidate, Item

    item = Item.objects.create(
        project=project,
        external_id=external_id or f"item-{next(_item_seq)}",
        prompt="" if messages else prompt,
        messages=messages,
        metadata=metadata or {},
        priority=priority,
        source=source,
        status=status,
    )
    if created_at is not None:
        Item.objects.filter(pk=item.pk).update(created_at=created_at)
        item.created_at = created_at
    if candidates is None:
        candidates = [("Paris.", "base-model")]
    Candidate.objects.bulk_create(
        Candidate(item=item, position=i, output=output, model=model)
        for i, (output, model) in enumerate(candidates)
    )
    return item
