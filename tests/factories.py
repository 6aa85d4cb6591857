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
