"""How the queue's hot path meets PostgreSQL: the next item's outputs read with a prepared
statement, and the queue's item updates kept HOT by curation_item's fillfactor (migration
0006; bench/review_bench.py prints the HOT share of the 32-expert loop)."""

from __future__ import annotations

import pytest
from django.db import connection

from curation.selectors import queue_item_payload
from curation.services.queue import queue_claim_next
from curation.services.settings import project_settings_update
from tests.factories import UserFactory, item_add, membership_add

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL only"),
]


def _prepared_statements() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        return [row[0] for row in cursor.fetchall()]


def test_next_item_payload_reads_its_outputs_with_a_prepared_statement(project):
    item = item_add(
        project,
        messages=[{"role": "user", "content": "Hi <b>there</b>"}],
        candidates=[("first", "m1"), ("second", "m2")],
        metadata={"source": "chat"},
    )
    connection.ensure_connection()
    assert not any("curation_candidate" in s for s in _prepared_statements())
    payload = queue_item_payload(item=item)
    assert [s for s in _prepared_statements() if "FROM curation_candidate" in s], (
        "the outputs' statement was not prepared on the server"
    )
    candidates = list(item.candidates.order_by("position"))
    assert payload == {
        "id": item.pk,
        "external_id": item.external_id,
        "messages": [{"role": "user", "content": "Hi <b>there</b>"}],
        "candidates": [{"id": c.pk, "output": c.output, "model": c.model} for c in candidates],
        "metadata": {"source": "chat"},
    }
    # The same answer the second time, from the statement prepared the first time.
    assert queue_item_payload(item=item) == payload


def test_item_table_keeps_room_on_its_pages():
    with connection.cursor() as cursor:
        cursor.execute("SELECT reloptions FROM pg_class WHERE relname = 'curation_item'")
        assert "fillfactor=90" in (cursor.fetchone()[0] or [])


def _item_update_counts() -> tuple[int, int]:
    """This transaction's (updates, HOT updates) of curation_item so far."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables"
            " WHERE relname = 'curation_item'"
        )
        return cursor.fetchone()


def test_claims_update_items_in_place_on_a_page_filled_by_an_import(project, personas):
    """Items imported in bulk fill pages up to the fillfactor; the claims' updates of the
    queue columns (no index on them) then fit on the item's own page: HOT updates, no new
    index entries. Packed full (fillfactor 100) the first update moved the row and wrote an
    entry into each of the item's indexes."""
    project_settings_update(project=project, overlap=1)
    with connection.cursor() as cursor:
        cursor.execute(
            """INSERT INTO curation_item (project_id, external_id, prompt, metadata, priority,
                   status, review_count, held_slots, source, created_at)
               SELECT %s, 'bulk-' || g, 'How do I reset my password? #' || g, '{}'::jsonb,
                   CASE WHEN g BETWEEN 150 AND 152 THEN 5 ELSE 0 END, 'open', 0, 0, 'test',
                   now()
               FROM generate_series(1, 300) AS g""",
            [project.pk],
        )
        # The three items first in hand-out order, and the page each one sits on.
        cursor.execute(
            """SELECT id, (ctid::text::point)[0] FROM curation_item
               WHERE project_id = %s AND external_id IN ('bulk-150', 'bulk-151', 'bulk-152')""",
            [project.pk],
        )
        first = dict(cursor.fetchall())
        # Their page was filled by this insert alone (rows before and after them on it).
        cursor.execute(
            """SELECT count(*) FROM curation_item
               WHERE (ctid::text::point)[0] = ANY(%s) AND project_id = %s""",
            [list(set(first.values())), project.pk],
        )
        assert cursor.fetchone()[0] > 10 * len(set(first.values()))
    experts = [personas["expert"]]
    for name in ("hot-1", "hot-2"):
        user = UserFactory(username=name)
        membership_add(project, user, "expert")
        experts.append(user)

    updates, hot = _item_update_counts()
    claimed = {queue_claim_next(project=project, expert=e).item.pk for e in experts}
    updates_after, hot_after = _item_update_counts()

    assert claimed == set(first)
    assert updates_after - updates == 3
    assert hot_after - hot == 3, "the claims' item updates were not HOT"
