from django.apps import AppConfig


class RedlineConfig(AppConfig):
    """Holds no models; registers Redline's system checks."""

    name = "redline"
    verbose_name = "Redline"

    def ready(self) -> None:
        from redline.lib import checks  # noqa: F401  (registers the checks)
