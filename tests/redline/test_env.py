import pytest
from django.core.exceptions import ImproperlyConfigured

from redline.lib.env import (
    env_bool,
    env_int,
    env_list,
    env_path,
    env_str,
    parse_database_url,
)


@pytest.mark.parametrize("raw", ["maybe", "2", "enabled"])
def test_bool_rejects_a_bad_value_naming_the_variable(monkeypatch, raw):
    monkeypatch.setenv("REDLINE_DEBUG", raw)
    with pytest.raises(ImproperlyConfigured, match=rf"REDLINE_DEBUG='{raw}' is not a boolean"):
        env_bool("REDLINE_DEBUG", False)


@pytest.mark.parametrize(("raw", "expected"), [("1", True), ("Yes", True), ("off", False)])
def test_bool_reads_the_usual_spellings(monkeypatch, raw, expected):
    monkeypatch.setenv("X_FLAG", raw)
    assert env_bool("X_FLAG", not expected) is expected


def test_bool_default_when_unset(monkeypatch):
    monkeypatch.delenv("X_FLAG", raising=False)
    assert env_bool("X_FLAG", True) is True


def test_int_rejects_text_and_values_below_minimum(monkeypatch):
    monkeypatch.setenv("REDLINE_HSTS_SECONDS", "a year")
    with pytest.raises(
        ImproperlyConfigured, match="REDLINE_HSTS_SECONDS='a year' is not an integer"
    ):
        env_int("REDLINE_HSTS_SECONDS", 0)
    monkeypatch.setenv("REDLINE_HSTS_SECONDS", "-5")
    with pytest.raises(ImproperlyConfigured, match="REDLINE_HSTS_SECONDS='-5' must be at least 0"):
        env_int("REDLINE_HSTS_SECONDS", 0, minimum=0)


def test_list_splits_on_commas_and_drops_blanks(monkeypatch):
    monkeypatch.setenv("REDLINE_ALLOWED_HOSTS", " a.example , ,b.example")
    assert env_list("REDLINE_ALLOWED_HOSTS", []) == ["a.example", "b.example"]


def test_path_must_be_absolute(monkeypatch):
    monkeypatch.setenv("REDLINE_STORAGE_DIR", "relative/dir")
    with pytest.raises(
        ImproperlyConfigured, match="REDLINE_STORAGE_DIR='relative/dir' must be an absolute path"
    ):
        env_path("REDLINE_STORAGE_DIR", None)


def test_secret_read_from_file_variant(monkeypatch, tmp_path):
    secret = tmp_path / "key"
    secret.write_text("s3cret-value\n")
    monkeypatch.delenv("REDLINE_SECRET_KEY", raising=False)
    monkeypatch.setenv("REDLINE_SECRET_KEY_FILE", str(secret))
    assert env_str("REDLINE_SECRET_KEY", secret=True) == "s3cret-value"


def test_secret_file_that_cannot_be_read_names_the_variable(monkeypatch, tmp_path):
    monkeypatch.delenv("REDLINE_SECRET_KEY", raising=False)
    monkeypatch.setenv("REDLINE_SECRET_KEY_FILE", str(tmp_path / "missing"))
    with pytest.raises(ImproperlyConfigured, match="REDLINE_SECRET_KEY_FILE=.*cannot be read"):
        env_str("REDLINE_SECRET_KEY", secret=True)


def test_secret_and_file_variant_together_are_refused(monkeypatch, tmp_path):
    (tmp_path / "key").write_text("x")
    monkeypatch.setenv("REDLINE_SECRET_KEY", "y")
    monkeypatch.setenv("REDLINE_SECRET_KEY_FILE", str(tmp_path / "key"))
    with pytest.raises(ImproperlyConfigured, match="REDLINE_SECRET_KEY or REDLINE_SECRET_KEY_FILE"):
        env_str("REDLINE_SECRET_KEY", secret=True)


def test_postgres_url_is_parsed_with_options():
    db = parse_database_url(
        "DATABASE_URL", "postgres://red%40line:p%2Fw@db.internal:6543/redline?sslmode=require"
    )
    assert db["ENGINE"] == "django.db.backends.postgresql"
    assert (db["USER"], db["PASSWORD"], db["HOST"], db["PORT"], db["NAME"]) == (
        "red@line",
        "p/w",
        "db.internal",
        "6543",
        "redline",
    )
    assert db["OPTIONS"] == {"sslmode": "require"}


def test_sqlite_url_absolute_path_uses_wal(tmp_path):
    db = parse_database_url("DATABASE_URL", f"sqlite:///{tmp_path}/x.db")
    assert db["NAME"] == f"{tmp_path}/x.db"
    assert "journal_mode=WAL" in db["OPTIONS"]["init_command"]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://u@h/db", "unsupported scheme 'mysql'"),
        ("postgres://u@h:5432", "names no database"),
        ("postgres://u@h:notaport/db", "bad port"),
    ],
)
def test_bad_database_urls_name_the_variable(url, message):
    with pytest.raises(ImproperlyConfigured, match=rf"DATABASE_URL=.*{message}"):
        parse_database_url("DATABASE_URL", url)
