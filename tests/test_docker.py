"""No Docker engine runs here: check what can be checked in docker/ without one."""

import re
import shlex
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_every_copy_source_in_the_dockerfile_exists():
    text = (ROOT / "docker" / "Dockerfile").read_text()
    for line in text.splitlines():
        if line.startswith("COPY") and "--from=" not in line:
            *sources, _dest = [p for p in shlex.split(line)[1:] if not p.startswith("--")]
            for source in sources:
                assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"


def test_dockerfile_runs_as_non_root_and_collects_static():
    text = (ROOT / "docker" / "Dockerfile").read_text()
    assert re.search(r"^USER redline$", text, re.M)
    assert "collectstatic" in text
    assert text.count("FROM ") >= 3  # multi-stage


def test_compose_parses_and_runs_commands_that_exist():
    from django.core.management import get_commands

    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    services = compose["services"]
    assert {"web", "worker", "training-worker", "beat", "postgres", "redis"} <= set(services)
    for name in ("migrate", "worker", "training-worker", "beat"):
        command = services[name]["command"]
        if command[0] == "python":
            assert command[2] in get_commands(), f"{name}: no management command {command[2]}"
        else:
            assert command[:3] == ["celery", "-A", "redline"], name
    queues = services["worker"]["command"][services["worker"]["command"].index("-Q") + 1]
    training = services["training-worker"]["command"]
    from redline.celery import QUEUES

    assert set(queues.split(",")) | {training[training.index("-Q") + 1]} == set(QUEUES)
    assert "--max-tasks-per-child" in training


def test_gunicorn_target_in_the_image_is_importable():
    import importlib

    text = (ROOT / "docker" / "Dockerfile").read_text()
    target = re.search(r'"gunicorn", "([\w.]+):(\w+)"', text)
    module = importlib.import_module(target.group(1))
    assert callable(getattr(module, target.group(2)))
