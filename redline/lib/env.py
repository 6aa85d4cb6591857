"""Typed readers for environment variables.

Every reader raises ``ImproperlyConfigured`` naming the variable and the bad value, so a
misconfigured deployment fails at start-up with a message an operator can act on. Secrets
can be given as ``NAME_FILE`` pointing at a file (Docker/Kubernetes secrets); the file's
content, stripped of surrounding whitespace, is then the value.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _raw(name: str, *, file_variant: bool = False) -> str | None:
    if file_variant:
        path = os.environ.get(f"{name}_FILE")
        if path:
            if name in os.environ:
                raise ImproperlyConfigured(f"Set {name} or {name}_FILE, not both.")
            try:
                return Path(path).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ImproperlyConfigured(
                    f"{name}_FILE={path!r} cannot be read: {exc.strerror}."
                ) from exc
    return os.environ.get(name)


def env_str(name: str, default: str | None = None, *, secret: bool = False) -> str | None:
    """A string; ``secret=True`` also accepts ``NAME_FILE``."""
    value = _raw(name, file_variant=secret)
    return default if value is None else value


def env_bool(name: str, default: bool) -> bool:
    value = _raw(name)
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ImproperlyConfigured(
        f"{name}={value!r} is not a boolean; use one of 1/0, true/false, yes/no, on/off."
    )


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    value = _raw(name)
    if value is None:
        return default
    try:
        number = int(value.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not an integer.") from None
    if minimum is not None and number < minimum:
        raise ImproperlyConfigured(f"{name}={value!r} must be at least {minimum}.")
    return number


def env_list(name: str, default: list[str]) -> list[str]:
    """A comma-separated list; blanks are dropped."""
    value = _raw(name)
    if value is None:
        return list(default)
    return [part.strip() for part in value.split(",") if part.strip()]


def env_path(name: str, default: Path) -> Path:
    value = _raw(name)
    if value is None or not value.strip():
        return default
    path = Path(value.strip()).expanduser()
    if not path.is_absolute():
        raise ImproperlyConfigured(f"{name}={value!r} must be an absolute path.")
    return path


def parse_database_url(name: str, url: str) -> dict:
    """Turn ``postgres://user:pass@host:port/db?opt=v`` or ``sqlite:///path`` into DATABASES['default']."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    options = dict(parse_qsl(parts.query))
    if scheme == "sqlite":
        # sqlite:////abs/path.db (absolute) or sqlite:///relative.db
        raw = unquote(parts.path)
        # Four slashes mean an absolute path; three, a path relative to the working directory.
        path = raw[1:] if raw.startswith("//") else raw.removeprefix("/")
        if not path.strip("/"):
            raise ImproperlyConfigured(f"{name}={url!r} names no SQLite file.")
        return sqlite_database(Path(path).absolute())
    if scheme in {"postgres", "postgresql", "pgsql"}:
        db = unquote(parts.path.lstrip("/"))
        if not db:
            raise ImproperlyConfigured(f"{name}={url!r} names no database (…/dbname).")
        try:
            port = parts.port
        except ValueError:
            raise ImproperlyConfigured(f"{name}={url!r} has a bad port.") from None
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": db,
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": parts.hostname or "",
            "PORT": str(port or ""),
            "OPTIONS": options,
        }
    raise ImproperlyConfigured(
        f"{name}={url!r} has an unsupported scheme {scheme!r}; use postgres:// or sqlite:///."
    )


def sqlite_database(path: Path) -> dict:
    """SQLite tuned for a single-machine demo: WAL, immediate write transactions, a busy timeout."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(path),
        "OPTIONS": {
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": (
                "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;"
            ),
        },
    }
