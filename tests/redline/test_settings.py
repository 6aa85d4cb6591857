from tests.redline.subprocess_env import run_django


def test_start_up_fails_naming_a_bad_boolean():
    result = run_django("", REDLINE_DEBUG="sometimes")
    assert result.returncode != 0
    assert "REDLINE_DEBUG='sometimes' is not a boolean" in result.stderr


def test_start_up_fails_without_a_secret_key_in_production():
    result = run_django("", REDLINE_DEBUG="0", REDLINE_SECRET_KEY=None)
    assert result.returncode != 0
    assert "REDLINE_SECRET_KEY (or REDLINE_SECRET_KEY_FILE) must be set" in result.stderr


def test_short_secret_key_is_refused():
    result = run_django("", REDLINE_SECRET_KEY="short")
    assert "REDLINE_SECRET_KEY is too short" in result.stderr


def test_csrf_origin_without_scheme_is_refused():
    result = run_django("", REDLINE_CSRF_TRUSTED_ORIGINS="redline.example.com")
    assert "needs a scheme, e.g. https://redline.example.com" in result.stderr


def test_bad_database_url_is_refused_at_start_up():
    result = run_django("", DATABASE_URL="oracle://x/y")
    assert "DATABASE_URL='oracle://x/y' has an unsupported scheme 'oracle'" in result.stderr


def test_embedded_defaults_use_sqlite_wal_and_filesystem_broker(tmp_path):
    code = (
        "from django.conf import settings; from django.db import connection\n"
        "print(settings.DATABASES['default']['ENGINE'])\n"
        "print(settings.CELERY_BROKER_URL)\n"
        "c = connection.cursor(); c.execute('PRAGMA journal_mode'); print(c.fetchone()[0])\n"
    )
    result = run_django(
        code,
        DATABASE_URL=None,
        CELERY_BROKER_URL=None,
        CELERY_RESULT_BACKEND=None,
        REDLINE_DEBUG="1",
        REDLINE_SECRET_KEY=None,
        REDLINE_VAR_DIR=str(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["django.db.backends.sqlite3", "filesystem://", "wal"]
    assert (tmp_path / "redline.sqlite3").exists()
    assert (tmp_path / "secret_key").stat().st_mode & 0o777 == 0o600
