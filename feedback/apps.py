from django.apps import AppConfig


class FeedbackConfig(AppConfig):
    """Expert decisions: reviews and their revisions, agreement, gold items, adjudication."""

    name = "feedback"
    default_auto_field = "django.db.models.BigAutoField"
