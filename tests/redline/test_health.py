import json

import pytest

from tests.redline.subprocess_env import run_django

HEALTHZ = (
    "import json; from django.test import Client\n"
    "r = Client().get('/healthz')\n"
    "print(r.status_code); print(r.content.decode())\n"
)


@pytest.mark.django_db
def test_healthz_is_200_when_database_and_broker_answer(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["broker"]["ok"] is True
    assert "no-cache" in response["Cache-Control"]


def _healthz_in_subprocess(**env):
    # A database that always exists on the test server; SELECT 1 is all the probe needs.
    env = {"DATABASE_URL": "postgres://postgres@127.0.0.1:5432/postgres", **env}
    result = run_django(HEALTHZ, **env)
    assert result.returncode == 0, result.stderr
    status, body = result.stdout.strip().split("\n", 1)
    return int(status), json.loads(body)


def test_healthz_is_503_naming_the_broker_when_redis_is_unreachable():
    status, body = _healthz_in_subprocess(CELERY_BROKER_URL="redis://127.0.0.1:1/0")
    assert status == 503
    assert body["status"] == "unavailable"
    assert body["checks"]["broker"]["ok"] is False
    assert "Error" in body["checks"]["broker"]["error"]
    assert body["checks"]["database"]["ok"] is True


def test_healthz_is_503_naming_the_database_when_postgres_is_unreachable():
    status, body = _healthz_in_subprocess(DATABASE_URL="postgres://postgres@127.0.0.1:1/redline")
    assert status == 503
    assert body["checks"]["database"]["ok"] is False
    assert body["checks"]["broker"]["ok"] is True


def test_healthz_answers_plain_http_even_when_https_is_enforced():
    status, _ = _healthz_in_subprocess(REDLINE_HTTPS="1")
    assert status == 200
