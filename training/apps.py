from django.apps import AppConfig


class TrainingConfig(AppConfig):
    """Dataset versions, base models, training runs, adapters and evaluation rounds."""

    name = "training"
    default_auto_field = "django.db.models.BigAutoField"
