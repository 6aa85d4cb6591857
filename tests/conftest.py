"""Shared fixtures: personas (expert, manager, admin, outsider) and static files for live servers."""

from __future__ import annotations

import pytest

from tests.factories import ProjectFactory, UserFactory, membership_add


@pytest.fixture(scope="session", autouse=True)
def _plain_static_storage():
    """Serve static files unhashed from the app folders, as the live server's static handler
    expects. Production's hashed manifest storage is exercised by `make test`'s collectstatic."""
    from django.conf import settings
    from django.core.files.storage import storages

    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    from django.contrib.staticfiles.storage import staticfiles_storage
    from django.utils.functional import empty

    storages._storages.pop("staticfiles", None)
    storages.__dict__.pop("backends", None)  # cached_property: re-read from settings
    staticfiles_storage._wrapped = empty


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    """PBKDF2's 1M iterations cost ~0.4 s a user; tests only need a hasher that works."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def project(db):
    return ProjectFactory()


@pytest.fixture
def personas(project):
    """One user per role in ``project``, plus an outsider who belongs to another project."""
    expert = UserFactory(username="erin-expert")
    manager = UserFactory(username="mona-manager")
    admin = UserFactory(username="ada-admin", is_staff=True, is_superuser=True)
    outsider = UserFactory(username="oscar-outsider")
    membership_add(project, expert, "expert")
    membership_add(project, manager, "manager")
    membership_add(ProjectFactory(), outsider, "manager")
    return {"expert": expert, "manager": manager, "admin": admin, "outsider": outsider}


@pytest.fixture
def client_for(client):
    """``client_for(user)``: a test client logged in as ``user`` (CSRF checks on)."""
    from django.test import Client

    def make(user, *, enforce_csrf: bool = False):
        c = Client(enforce_csrf_checks=enforce_csrf)
        c.force_login(user)
        return c

    return make


@pytest.fixture
def api_for():
    """``api_for(user)``: a DRF APIClient authenticated as ``user`` by token."""
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    def make(user):
        c = APIClient()
        token, _ = Token.objects.get_or_create(user=user)
        c.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
        return c

    return make


@pytest.fixture(scope="session")
def browser():
    """Headless Debian Chromium driven by Playwright (its own browser downloads fail here)."""
    import os
    import shutil

    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.fail(
            "Debian's chromium is not installed: run `make services` (apt-get install chromium)"
        )
    # Playwright's sync API runs an event loop in this thread; the ORM calls the tests make
    # between browser steps are ordinary synchronous calls.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=executable,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser, live_server):
    """A fresh browser context; fails the test on any console error or uncaught exception
    (a CSP violation shows up as a console error)."""
    context = browser.new_context(base_url=live_server.url)
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on(
        "console",
        lambda msg: (
            problems.append(f"console {msg.type}: {msg.text}") if msg.type == "error" else None
        ),
    )
    page.problems = problems
    yield page
    context.close()
    assert not problems, problems


@pytest.fixture
def celery_worker():
    """A real Celery worker (in-process, solo pool) consuming every queue through the real
    Redis broker: never eager mode. Tests that need the worker to see their rows also ask for
    ``transactional_db``."""
    from celery.contrib.testing.worker import start_worker
    from django.conf import settings

    from redline.celery import QUEUES, app

    assert settings.CELERY_BROKER_URL.startswith("redis://"), "tests run on Redis"
    assert not app.conf.task_always_eager
    app.control.purge()
    with start_worker(
        app, pool="solo", queues=list(QUEUES), perform_ping_check=False, shutdown_timeout=10
    ) as worker:
        yield worker
