"""The Celery application.

Queues: ``default`` (short housekeeping), ``datasets`` (imports, dataset builds), ``training``
(one adapter run per worker process) and ``inference`` (generation). Tasks are routed by name
(``CELERY_TASK_ROUTES`` in settings). Run, for example::

    celery -A redline worker -Q default,datasets -c 2
    celery -A redline worker -Q training -c 1 --max-tasks-per-child=1
    celery -A redline beat
"""

import os

from celery import Celery
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "redline.settings")

QUEUES = ("default", "datasets", "training", "inference")

app = Celery("redline")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_queues = [Queue(name, routing_key=name) for name in QUEUES]
app.autodiscover_tasks()


@app.task(name="redline.ping", acks_late=True)
def ping(payload: str = "pong") -> str:
    """Round trip through the broker and a worker: ``celery -A redline call redline.ping``."""
    return payload
