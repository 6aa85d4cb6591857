from django.apps import AppConfig


class CurationConfig(AppConfig):
    """Projects and their members, items and candidates, imports and the review queue."""

    name = "curation"
    default_auto_field = "django.db.models.BigAutoField"
