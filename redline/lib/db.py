"""A database cursor for the review loop's fixed statements.

On PostgreSQL, ``hot_cursor()`` binds parameters on the server and prepares each statement
the first time a connection runs it, so PostgreSQL parses and plans it once per connection
instead of on every request (bench/review_bench.py: the loop's statements ran about 40%
faster). Only the hand-written hot-path SQL goes through it (token check, the submit, the
queue's claim); the ORM and everything else keep Django's client-side binding. The cursor is
Django's wrapper as usual: database errors arrive as Django's (``IntegrityError``...),
``connection.execute_wrapper`` sees every statement, the connection's health check runs
first. Elsewhere (SQLite), with ``REDLINE_DB_PREPARED_STATEMENTS=0``, or while queries are
logged (DEBUG, a test capturing them), it is ``connection.cursor()``.
"""

from __future__ import annotations

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections

try:
    import psycopg
except ImportError:  # SQLite-only installs
    psycopg = None


if psycopg is not None:

    class _PreparingCursor(psycopg.Cursor):
        """A server-side binding cursor that prepares every statement it runs."""

        def execute(self, query, params=None, *, prepare=None, binary=None):
            return super().execute(
                query, params, prepare=True if prepare is None else prepare, binary=binary
            )


def hot_cursor():
    # The real connection object: every attribute read through django.db.connection (a
    # proxy to a context-local) costs a lookup, which added up on this path.
    connection = connections[DEFAULT_DB_ALIAS]
    if (
        psycopg is None
        or connection.vendor != "postgresql"
        or not settings.REDLINE_DB_PREPARED_STATEMENTS
        # Query logging (DEBUG, tests capturing queries) wants each statement with its
        # values, which psycopg does not keep for a prepared one: send them as usual then.
        or connection.queries_logged
    ):
        return connection.cursor()
    # What connection.cursor() does, with our cursor class in place of the default one.
    connection.close_if_health_check_failed()
    connection.ensure_connection()
    raw = connection.connection
    if raw.prepare_threshold is None:
        # Django turns psycopg's preparing off (None), which also refuses prepare=True. Only
        # our cursor asks for it: Django's own cursors bind on the client and never prepare,
        # and a threshold this high never prepares anything automatically.
        raw.prepare_threshold = _NEVER_AUTOMATICALLY
    with connection.wrap_database_errors:
        return connection._prepare_cursor(_PreparingCursor(raw))


_NEVER_AUTOMATICALLY = 1 << 62
