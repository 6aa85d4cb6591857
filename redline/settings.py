"""Redline settings: one module, configured entirely by environment variables.

Every variable is documented in README.md ("Configuration"). With nothing set, Redline runs on
SQLite (WAL) under ./var/ and a Celery broker on the local filesystem, so a bare machine can
run the demo; production and the test suite set DATABASE_URL and CELERY_BROKER_URL to
PostgreSQL and Redis.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured

from redline.lib.env import (
    env_bool,
    env_int,
    env_list,
    env_path,
    env_str,
    parse_database_url,
    sqlite_database,
)

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = env_path("REDLINE_VAR_DIR", BASE_DIR / "var")

DEBUG = env_bool("REDLINE_DEBUG", False)


def _secret_key() -> str:
    key = env_str("REDLINE_SECRET_KEY", secret=True)
    if key is not None:
        if len(key) < 50:
            raise ImproperlyConfigured(
                "REDLINE_SECRET_KEY is too short: use at least 50 random characters "
                '(python -c "import secrets; print(secrets.token_urlsafe(50))").'
            )
        return key
    if not DEBUG:
        raise ImproperlyConfigured(
            "REDLINE_SECRET_KEY (or REDLINE_SECRET_KEY_FILE) must be set when REDLINE_DEBUG is off."
        )
    # Development: a key generated once per checkout, kept under var/ so sessions survive restarts.
    path = VAR_DIR / "secret_key"
    if not path.exists():
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(50), encoding="utf-8")
        path.chmod(0o600)
    return path.read_text(encoding="utf-8").strip()


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = env_list(
    "REDLINE_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if DEBUG else []
)
CSRF_TRUSTED_ORIGINS = env_list("REDLINE_CSRF_TRUSTED_ORIGINS", [])
for _origin in CSRF_TRUSTED_ORIGINS:
    if "://" not in _origin:
        raise ImproperlyConfigured(
            f"REDLINE_CSRF_TRUSTED_ORIGINS entry {_origin!r} needs a scheme, e.g. https://{_origin}."
        )

# Where datasets, adapters and base models live. Training workers need the same path.
STORAGE_DIR = env_path("REDLINE_STORAGE_DIR", VAR_DIR / "storage")

INSTALLED_APPS = [
    "redline.apps.RedlineConfig",
    "curation",
    "feedback",
    "training",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "csp",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]
# Drift-alert webhooks refuse private and loopback addresses unless this is on (a webhook URL
# is set by project managers: without the check it could probe the internal network).
REDLINE_WEBHOOK_ALLOW_PRIVATE = env_bool("REDLINE_WEBHOOK_ALLOW_PRIVATE", False)
if env_bool("REDLINE_SERVER_TIMING", False):
    MIDDLEWARE.insert(0, "redline.lib.timing.ServerTimingMiddleware")

ROOT_URLCONF = "redline.urls"
WSGI_APPLICATION = "redline.wsgi.application"
ASGI_APPLICATION = "redline.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -----------------------------------------------------------------------------
_database_url = env_str("DATABASE_URL", secret=True)
DATABASES = {
    "default": (
        parse_database_url("DATABASE_URL", _database_url)
        if _database_url
        else sqlite_database(VAR_DIR / "redline.sqlite3")
    )
}
DATABASES["default"]["CONN_MAX_AGE"] = env_int("REDLINE_DB_CONN_MAX_AGE", 60, minimum=0)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# The review loop's fixed SQL statements (token check, submit, claim) are prepared once per
# PostgreSQL connection (redline.lib.db.hot_cursor); every other query is sent as before. Turn
# off behind a transaction-pooling PgBouncer older than 1.21, which cannot keep them.
REDLINE_DB_PREPARED_STATEMENTS = env_bool("REDLINE_DB_PREPARED_STATEMENTS", True)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Auth ---------------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "curation:project_list"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("REDLINE_TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

# --- Static files -------------------------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = env_path("REDLINE_STATIC_ROOT", VAR_DIR / "static")
STATICFILES_DIRS = [
    BASE_DIR / "static",
    # htmx comes from npm's htmx.org (pinned in package.json), installed by `make`, never a CDN.
    ("vendor/htmx", BASE_DIR / "node_modules" / "htmx.org" / "dist"),
]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

# --- HTTPS and browser security ------------------------------------------------------------
# REDLINE_HTTPS: the site is served over HTTPS (directly or behind a TLS-terminating proxy).
HTTPS = env_bool("REDLINE_HTTPS", not DEBUG)
SECURE_SSL_REDIRECT = HTTPS
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]  # load balancers probe over plain HTTP
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
SECURE_HSTS_SECONDS = env_int("REDLINE_HSTS_SECONDS", 31_536_000 if HTTPS else 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_SECONDS > 0
SECURE_HSTS_PRELOAD = env_bool("REDLINE_HSTS_PRELOAD", False)
if env_bool("REDLINE_BEHIND_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"
SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]

# No inline scripts or styles anywhere: htmx is configured through a <meta> tag, data reaches
# scripts through json_script, and progress uses <progress> rather than style attributes.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "font-src": [SELF],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}

# --- Uploads ------------------------------------------------------------------------------
# Imports stream to disk; Django never holds a whole upload in memory past this size.
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("REDLINE_MAX_JSON_BODY_BYTES", 64 * 1024 * 1024, minimum=1)
FILE_UPLOAD_TEMP_DIR = None
REDLINE_IMPORT_MAX_BYTES = env_int("REDLINE_IMPORT_MAX_BYTES", 2 * 1024**3, minimum=1)

# --- REST API -----------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first, so an unauthenticated API call gets 401 with WWW-Authenticate.
        "redline.lib.auth.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "redline.lib.api.Pagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"]
    + (["rest_framework.renderers.BrowsableAPIRenderer"] if DEBUG else []),
    "EXCEPTION_HANDLER": "redline.lib.api.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Redline API",
    "DESCRIPTION": "Feed model outputs in, take expert decisions, datasets and adapters out.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
}

# --- Celery -------------------------------------------------------------------------------
_broker_default = "filesystem://"
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", _broker_default, secret=True)
CELERY_RESULT_BACKEND = env_str("CELERY_RESULT_BACKEND", None, secret=True) or None
if CELERY_BROKER_URL == "filesystem://":
    _broker_dir = VAR_DIR / "broker"
    for _sub in ("queue", "processed"):
        (_broker_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "store_processed": False,
    }
CELERY_BROKER_CONNECTION_TIMEOUT = 3
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "default"
# Routes by task name; each task declares a stable name= that starts with its app.
CELERY_TASK_ROUTES = {
    "curation.import_*": {"queue": "datasets"},
    "feedback.labelstudio_*": {"queue": "datasets"},
    "training.dataset_*": {"queue": "datasets"},
    "training.train_*": {"queue": "training"},
    "training.generate_*": {"queue": "inference"},
}
CELERY_TASK_TRACK_STARTED = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BEAT_SCHEDULE = {
    "queue-sweep-lapsed": {"task": "curation.queue_sweep_lapsed", "schedule": 60.0},
    "import-sweep-orphaned": {"task": "curation.import_sweep_orphaned", "schedule": 300.0},
    "labelstudio-sweep-orphaned": {
        "task": "feedback.labelstudio_sweep_orphaned",
        "schedule": 300.0,
    },
    "feedback-drift-check": {"task": "feedback.drift_check", "schedule": 3600.0},
    "training-runs-sweep-stale": {"task": "training.runs_sweep_stale", "schedule": 120.0},
    "training-generate-sweep-stale": {
        "task": "training.generate_sweep_stale",
        "schedule": 120.0,
        "options": {"queue": "default"},  # not behind long jobs on the inference queue
    },
    "training-evaluation-rounds-check": {
        "task": "training.evaluation_rounds_check",
        "schedule": 60.0,
    },
    "training-policies-check": {"task": "training.policies_check", "schedule": 300.0},
    "training-cycles-advance": {"task": "training.cycles_advance", "schedule": 60.0},
}

# --- Logging ------------------------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("REDLINE_LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "INFO"}},
}
