"""Where a build reads its decisions and sorts its row hashes: one *decision source* per
database, the same ``Decision`` tuples in the same order from both, so the mapping and the
writer (and therefore the bytes) are the same whichever database holds the decisions.

* ``PostgresSource`` (production): one REPEATABLE READ transaction; ``COPY (SELECT …) TO
  STDOUT`` of ``selectors.decision_stream_sql`` (PostgreSQL aggregates each item's outputs
  and counted reviews); the row hashes copied into a TEMP table (binary COPY) and sorted by
  PostgreSQL. The fast path: what the benchmark measures.
* ``PortableSource`` (SQLite: the demo; it runs on PostgreSQL too, which is how the tests
  hold the two to the same bytes): one transaction
  (on SQLite a *deferred* one: a reader's snapshot that takes no write lock, so reviews and
  the build's progress go on being written meanwhile); the selection through the ORM in
  pages of ``PAGE`` items in item id order, each page's outputs and counted reviews in two
  more queries; the row hashes sorted in a scratch SQLite file in the build's temporary
  directory (SQLite sorts on disk), then deleted.

Memory stays bounded in both: one page of decisions (or one decision) and fixed buffers.
The selection rules are ``selectors.selection_where``'s; ``portable_selection`` says the same
thing through the ORM (two JSON tests have a spelling for SQLite and one for PostgreSQL).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.db import connection, transaction
from django.db.models import BooleanField, Count, Exists, F, Func, OuterRef, Q, QuerySet

from curation.models import Candidate, Project
from feedback.models import GoldAnswer, ItemOutcome, Review
from training import selectors
from training.services.mapping import Decision, chat_messages
from training.services.writer import read_spool

PAGE = 500  # items per query of the portable source
FETCH = 10_000  # rows per fetch when reading sorted hashes


# ---- The selection, through the ORM --------------------------------------------------------------


class JSONArrayNotEmpty(Func):
    """True when a JSON column holds an array with at least one element (false for NULL, an
    object, a scalar or ``[]``)."""

    output_field = BooleanField()
    arity = 1

    def as_sql(self, compiler, connection, **extra):  # SQLite's JSON1
        value, params = compiler.compile(self.source_expressions[0])
        return f"(json_type({value}, '$[0]') IS NOT NULL)", params

    def as_postgresql(self, compiler, connection, **extra):
        value, params = compiler.compile(self.source_expressions[0])
        return (
            f"(CASE WHEN jsonb_typeof({value}) = 'array' THEN jsonb_array_length({value}) > 0"
            " ELSE false END)",
            params,
        )


class LabelAnswered(Func):
    """A review's ``labels`` hold ``answer`` under ``key``: as the answer itself (a choice, a
    rating) or among a list of answers (a multiple choice). PostgreSQL's
    ``labels @> {key: answer} OR labels @> {key: [answer]}``, the same on SQLite: JSON types
    must match (a rating 3 is not the text "3")."""

    output_field = BooleanField()

    def __init__(self, expression, key: str, answer: str | int, **extra):
        super().__init__(expression, **extra)
        self.key, self.answer = key, answer

    def as_sql(self, compiler, connection, **extra):  # SQLite's JSON1
        labels, params = compiler.compile(self.source_expressions[0])
        path = "$." + json.dumps(self.key)
        types = "'text'" if isinstance(self.answer, str) else "'integer', 'real'"
        sql = (
            f"(json_type({labels}, %s) <> 'object' AND EXISTS (SELECT 1"  # noqa: S608 (a column)
            f" FROM json_each({labels}, %s) je WHERE je.type IN ({types}) AND je.value = %s))"
        )
        return sql, [*params, path, *params, path, self.answer]

    def as_postgresql(self, compiler, connection, **extra):
        labels, params = compiler.compile(self.source_expressions[0])
        sql = f"({labels} @> CAST(%s AS jsonb) OR {labels} @> CAST(%s AS jsonb))"
        return sql, [
            *params,
            json.dumps({self.key: self.answer}),
            *params,
            json.dumps({self.key: [self.answer]}),
        ]


def portable_selection(*, project: Project, filters: dict[str, Any]) -> QuerySet[ItemOutcome]:
    """The outcomes ``filters`` select: ``selectors.selection_where`` through the ORM."""
    qs = ItemOutcome.objects.filter(project_id=project.pk, outcome__in=list(filters["outcomes"]))
    if filters.get("sources"):
        qs = qs.filter(source__in=list(filters["sources"]))
    if filters.get("min_agreement") is not None:
        qs = qs.filter(agreement__gte=filters["min_agreement"])
    if filters.get("date_from"):
        qs = qs.filter(decided_at__gte=selectors._day_start(filters["date_from"]))
    if filters.get("date_to"):
        qs = qs.filter(decided_at__lt=selectors._day_start(filters["date_to"]) + timedelta(days=1))
    if filters.get("models"):
        qs = qs.filter(
            Exists(
                Candidate.objects.filter(
                    item_id=OuterRef("item_id"), model__in=list(filters["models"])
                )
            )
        )
    for key, answer in sorted((filters.get("labels") or {}).items()):
        qs = qs.filter(
            Exists(
                Review.objects.filter(item_id=OuterRef("item_id"))
                .exclude(verdict="skip")
                .filter(LabelAnswered(F("labels"), key, answer))
            )
        )
    gold = filters.get("gold", "include")
    if gold in ("exclude", "only"):
        has_gold = Exists(GoldAnswer.objects.filter(item_id=OuterRef("item_id")))
        qs = qs.filter(~has_gold if gold == "exclude" else has_gold)
    return qs


def portable_selection_summary(
    *, project: Project, filters: dict[str, Any]
) -> selectors.SelectionSummary:
    """``selectors.selection_summary`` through the ORM (one query)."""
    plain = Q(outcome="accepted", tie=False, preferred_candidate__isnull=True)
    as_it_was = Q(final_text="") | Q(final_text=F("final_candidate__output"))
    counts = portable_selection(project=project, filters=filters).aggregate(
        total=Count("pk"),
        accepted=Count("pk", filter=plain & as_it_was),
        corrected=Count(
            "pk",
            filter=plain
            & ~Q(final_text="")
            # IS DISTINCT FROM: an adjudicator's own text has no output to compare with
            & (Q(final_candidate__isnull=True) | ~Q(final_text=F("final_candidate__output"))),
        ),
        compared=Count("pk", filter=Q(outcome="accepted", preferred_candidate__isnull=False)),
        ties=Count("pk", filter=Q(outcome="accepted", tie=True)),
        rejected=Count("pk", filter=Q(outcome="rejected")),
        conversational=Count("pk", filter=Q(JSONArrayNotEmpty(F("item__messages")))),
    )
    return selectors.SelectionSummary(**counts)


def selection_count(*, project: Project, filters: dict[str, Any]) -> int:
    """How many decisions ``filters`` select: the build request's check (the counts by kind
    of decision are the build's to take, from the stream)."""
    if connection.vendor != "postgresql":
        return portable_selection(project=project, filters=filters).count()
    where, params = selectors.selection_where(project=project, filters=filters)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {selectors.OUTCOME} o WHERE {where}", params)  # noqa: S608
        return cursor.fetchone()[0]


def selection_summary(*, project: Project, filters: dict[str, Any]) -> selectors.SelectionSummary:
    """What ``filters`` select, on whichever database this is."""
    if connection.vendor == "postgresql":
        return selectors.selection_summary(project=project, filters=filters)
    return portable_selection_summary(project=project, filters=filters)


# ---- Sources ---------------------------------------------------------------------------------------


class DecisionSource:
    """One build's reads. Use as ``with source.snapshot():`` then, inside it, ``summary()``,
    ``rows()`` (items in id order: COPY tuples or ``Decision``s, see
    ``datasets._decision``) and ``with source.sorted_hashes(spool, expected=n) as index``."""

    def __init__(self, *, project: Project, filters: dict[str, Any], name: str):
        self.project = project
        self.filters = filters
        self.name = name  # unique per build: names the TEMP table or the scratch file

    def snapshot(self) -> contextlib.AbstractContextManager:
        raise NotImplementedError

    def summary(self) -> selectors.SelectionSummary:
        raise NotImplementedError

    def conversational(self) -> bool:
        """Whether any selected item has chat messages (the version's format)."""
        raise NotImplementedError

    def rows(self, *, item_range: tuple = ()) -> Iterator[Any]:
        raise NotImplementedError

    def split_point(self) -> int | None:
        """Where to split the items between two processes, or None (one process)."""
        raise NotImplementedError

    def sorted_hashes(
        self, spool: Path, *, expected: int
    ) -> contextlib.AbstractContextManager[HashIndex]:
        raise NotImplementedError


class HashIndex:
    """Every row's 16-byte hash, sorted. ``distinct_blocks()``: ``(kind, hashes, duplicates)``
    in kind then hash order, ``hashes`` being that kind's next distinct hashes end to end and
    ``duplicates`` how many rows beyond the first they stood for; ``duplicates()``:
    ``(kind, split, row_no)`` of every row whose line came before (same kind and hash,
    earlier in split then row order), in kind, split, row order. Both database give the
    same answers (the duplicates by the same SQL)."""

    DISTINCT = "SELECT kind, h, count(*) FROM {table} GROUP BY kind, h ORDER BY kind, h"
    DUPLICATES = """SELECT kind, split, row_no FROM (
            SELECT kind, split, row_no,
                row_number() OVER (PARTITION BY kind, h ORDER BY split, row_no) AS n
            FROM {table}) x
        WHERE n > 1 ORDER BY kind, split, row_no"""

    def __init__(self, table: str, cursor_factory):
        self.table = table
        self.cursor_factory = cursor_factory

    def _stream(self, sql: str, fetch: int = FETCH) -> Iterator[tuple]:
        with contextlib.closing(self.cursor_factory()) as cursor:
            cursor.execute(sql.format(table=self.table))
            while rows := cursor.fetchmany(fetch):
                yield from rows

    def distinct_blocks(self) -> Iterator[tuple[int, bytes, int]]:
        for kind, group in itertools.groupby(self._stream(self.DISTINCT), key=lambda r: r[0]):
            while chunk := list(itertools.islice(group, FETCH)):
                yield kind, b"".join(bytes(r[1]) for r in chunk), sum(r[2] - 1 for r in chunk)

    def duplicates(self) -> Iterator[tuple[int, int, int]]:
        return self._stream(self.DUPLICATES)


class PostgresHashIndex(HashIndex):
    """PostgreSQL hands the distinct hashes over in blocks: one row per kind and bucket of
    leading hash bytes, its hashes sorted and concatenated by ``string_agg``, so Python
    reads a few hundred rows instead of one per data row. Buckets follow the hash order
    (a bytea sorts byte by byte), so the blocks end to end are the kind's sorted hashes."""

    def __init__(self, table: str, cursor_factory, *, rows: int):
        super().__init__(table, cursor_factory)
        # About 256 buckets per kind, 65,536 past 4M rows: a block stays small at any size.
        self.bucket = (
            "get_byte(h, 0)" if rows <= 4_000_000 else "get_byte(h, 0) * 256 + get_byte(h, 1)"
        )

    def distinct_blocks(self) -> Iterator[tuple[int, bytes, int]]:
        sql = f"""SELECT kind, string_agg(h, ''::bytea ORDER BY h), sum(n - 1)::bigint
            FROM (SELECT kind, h, count(*) AS n FROM {{table}} GROUP BY kind, h) d
            GROUP BY kind, {self.bucket} ORDER BY kind, {self.bucket}"""  # noqa: S608 (constants)
        for kind, block, duplicates in self._stream(sql, fetch=4):  # a few blocks at a time
            yield kind, bytes(block), duplicates


class PostgresSource(DecisionSource):
    own_transaction = False

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        self.own_transaction = not connection.in_atomic_block
        with _postgres_snapshot():
            yield

    def summary(self) -> selectors.SelectionSummary:
        return selectors.selection_summary(project=self.project, filters=self.filters)

    def conversational(self) -> bool:
        where, params = selectors.selection_where(project=self.project, filters=self.filters)
        sql = f"""
            SELECT EXISTS (SELECT 1 FROM {selectors.OUTCOME} o
                JOIN {selectors.ITEM} i ON i.id = o.item_id
                WHERE {where} AND jsonb_typeof(i.messages) = 'array'
                    AND jsonb_array_length(i.messages) > 0)
        """  # noqa: S608 (table names and a clause built from constants)
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return bool(cursor.fetchone()[0])

    def stream_sql(self, *, item_range: tuple = ()) -> tuple[str, list[Any]]:
        return selectors.decision_stream_sql(
            project=self.project, filters=self.filters, item_range=item_range, shaped=True
        )

    def rows(self, *, item_range: tuple = ()) -> Iterator[tuple]:
        from training.services.parallel import copy_rows

        sql, params = self.stream_sql(item_range=item_range)
        # COPY streams rows as PostgreSQL produces them (no round trip per chunk), so the
        # server computes the next rows while these are written.
        with connection.cursor() as cursor:
            yield from copy_rows(cursor.cursor, sql, params)

    def split_point(self) -> int | None:
        """An item id halfway between the selection's first and last (ids are handed out in
        order, so usually about half the items on each side), or None when there is no
        second process to give work to: a connection pool (not safe across a fork), a
        build inside someone else's transaction (a second connection would not see its
        data), fewer than two items."""
        if connection.pool is not None or not self.own_transaction:
            return None
        where, params = selectors.selection_where(project=self.project, filters=self.filters)
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT min(o.item_id), max(o.item_id) FROM {selectors.OUTCOME} o WHERE {where}",  # noqa: S608
                params,
            )
            low, high = cursor.fetchone()
        if low is None or high <= low:
            return None
        return (low + high + 1) // 2

    def snapshot_connector(self):
        """Export this transaction's snapshot; return a function that opens a new connection
        (Django's settings and adapters) reading that snapshot, for another process."""
        import psycopg.sql

        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_export_snapshot()")
            (snapshot,) = cursor.fetchone()
        params = connection.get_connection_params()

        def connect():
            conn = connection.get_new_connection(params)
            conn.autocommit = True
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            conn.execute(
                psycopg.sql.SQL("SET TRANSACTION SNAPSHOT {}").format(psycopg.sql.Literal(snapshot))
            )
            return conn

        return connect

    @contextlib.contextmanager
    def sorted_hashes(self, spool: Path, *, expected: int) -> Iterator[HashIndex]:
        table = f"training_rowhash_{self.name}"
        with connection.cursor() as cursor:
            cursor.execute(
                f"CREATE TEMP TABLE {table} (kind smallint, split smallint, row_no integer,"
                " h bytea)"
            )
            raw = cursor.cursor
            copy_sql = f"COPY {table} (kind, split, row_no, h) FROM STDIN (FORMAT BINARY)"
            with open(spool, "rb") as f, raw.copy(copy_sql) as copy:
                while block := f.read(1024 * 1024):
                    copy.write(block)
            if raw.rowcount != expected:
                raise RuntimeError(f"{raw.rowcount} row hashes loaded for {expected} rows written.")
        # server-side cursors, in the snapshot
        yield PostgresHashIndex(table, connection.chunked_cursor, rows=expected)
        # On failure the rollback drops the table with everything else.
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE {table}")


@contextlib.contextmanager
def _postgres_snapshot() -> Iterator[None]:
    own_transaction = not connection.in_atomic_block
    with transaction.atomic():
        if own_transaction:
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        yield


class PortableSource(DecisionSource):
    def snapshot(self) -> contextlib.AbstractContextManager:
        return _portable_snapshot()

    def summary(self) -> selectors.SelectionSummary:
        return portable_selection_summary(project=self.project, filters=self.filters)

    def conversational(self) -> bool:
        return (
            portable_selection(project=self.project, filters=self.filters)
            .filter(JSONArrayNotEmpty(F("item__messages")))
            .exists()
        )

    def split_point(self) -> None:
        return None  # one process: SQLite has a single writer and the demo is small

    def rows(self, *, item_range: tuple = ()) -> Iterator[Decision]:
        if item_range:
            raise ValueError("The portable source reads the whole selection.")
        selection = (
            portable_selection(project=self.project, filters=self.filters)
            .order_by("item_id")
            .values_list(
                "item_id",
                "item__external_id",
                "item__prompt",
                "item__messages",
                "outcome",
                "source",
                "final_candidate_id",
                "final_text",
                "preferred_candidate_id",
                "tie",
                "agreement",
                "decided_by_id",
            )
        )
        last = None
        while True:
            page = list((selection if last is None else selection.filter(item_id__gt=last))[:PAGE])
            if not page:
                return
            ids = [row[0] for row in page]
            outputs: dict[int, tuple[list[int], list[str]]] = {i: ([], []) for i in ids}
            for item_id, candidate_id, output in (
                Candidate.objects.filter(item_id__in=ids)
                .order_by("item_id", "position")
                .values_list("item_id", "id", "output")
            ):
                outputs[item_id][0].append(candidate_id)
                outputs[item_id][1].append(output)
            reviews: dict[int, list[tuple]] = {i: [] for i in ids}
            for item_id, *review in (
                Review.objects.filter(item_id__in=ids)
                .exclude(verdict="skip")
                .order_by("item_id", "id")
                .values_list(
                    "item_id",
                    "id",
                    "expert_id",
                    "guideline_version__version",
                    "verdict",
                    "candidate_id",
                )
            ):
                reviews[item_id].append(review)
            for (
                item_id,
                external_id,
                prompt,
                messages,
                outcome,
                source,
                final_id,
                final_text,
                preferred_id,
                tie,
                agreement,
                decided_by,
            ) in page:
                counted = reviews[item_id]
                yield Decision(
                    item_id,
                    external_id,
                    prompt,
                    chat_messages(messages),
                    outcome,
                    source,
                    final_id,
                    final_text,
                    preferred_id,
                    bool(tie),
                    agreement,
                    decided_by if source == "adjudicated" else None,
                    outputs[item_id][0],
                    outputs[item_id][1],
                    rejected_candidate_ids=[
                        r[4] for r in counted if r[3] == "reject" and r[4] is not None
                    ],
                    unnamed_reject=any(r[3] == "reject" and r[4] is None for r in counted),
                    review_ids=[r[0] for r in counted],
                    expert_ids=[r[1] for r in counted],
                    guideline_versions=[r[2] for r in counted],
                )
            last = ids[-1]

    @contextlib.contextmanager
    def sorted_hashes(self, spool: Path, *, expected: int) -> Iterator[HashIndex]:
        path = spool.with_name(f"rowhashes-{self.name}.sqlite3")
        db = sqlite3.connect(path, isolation_level=None)
        try:
            for pragma in (
                "journal_mode = OFF",
                "synchronous = OFF",
                "temp_store = FILE",  # sorts spill to disk
                "cache_size = -16384",  # KiB: 16 MiB of pages at most
            ):
                db.execute(f"PRAGMA {pragma}")
            db.execute("CREATE TABLE rowhash (kind INTEGER, split INTEGER, row_no INTEGER, h BLOB)")
            db.execute("BEGIN")
            records = read_spool(spool)
            while batch := list(itertools.islice(records, FETCH)):
                db.executemany("INSERT INTO rowhash VALUES (?, ?, ?, ?)", batch)
            db.execute("COMMIT")
            (loaded,) = db.execute("SELECT count(*) FROM rowhash").fetchone()
            if loaded != expected:
                raise RuntimeError(f"{loaded} row hashes loaded for {expected} rows written.")
            yield HashIndex("rowhash", db.cursor)
        finally:
            db.close()
            path.unlink(missing_ok=True)


@contextlib.contextmanager
def _portable_snapshot() -> Iterator[None]:
    """One transaction for every read of the build. SQLite's usual mode here is IMMEDIATE
    (writers take the write lock at BEGIN): a build only reads, so its transaction begins
    DEFERRED, a snapshot from its first read (WAL) that blocks no writer."""
    if connection.vendor != "sqlite" or connection.in_atomic_block:
        with transaction.atomic():
            yield
        return
    connection.close_if_health_check_failed()  # not after: a new connection resets the mode
    connection.ensure_connection()
    mode = connection.transaction_mode
    connection.transaction_mode = "DEFERRED"
    try:
        with transaction.atomic():
            connection.transaction_mode = mode  # begun: the rest as configured
            yield
    finally:
        connection.transaction_mode = mode


def decision_source(*, project: Project, filters: dict[str, Any], name: str) -> DecisionSource:
    """The source for this database: COPY on PostgreSQL, the portable one elsewhere."""
    cls = PostgresSource if connection.vendor == "postgresql" else PortableSource
    return cls(project=project, filters=filters, name=name)
