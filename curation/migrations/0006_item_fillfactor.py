"""Leave 10% of every curation_item heap page free, so the queue's updates can stay on the page.

Every claim and decision rewrites an item's queue columns (held_slots, next_lapse_at,
review_count). None of them is indexed, so PostgreSQL can make the update HOT (heap-only: no
new entry in any of the item's four indexes) if the new row version fits on the same page.
Items are bulk-inserted into full pages, so without free room the first updates of each item
moved it to another page and wrote four index entries each (docs/feedback.md, benchmark). The
update that completes an item changes ``status`` (indexed, and the queue index's predicate) and
can never be HOT.

Only pages filled after this setting get the room (PostgreSQL does not rewrite the table
here); pages that VACUUM frees fill up again no further than 90%. curation_assignment is left
as it is: its updates change ``state``, ``slot`` or ``expires_at``, all indexed, so none could
be HOT. PostgreSQL only; SQLite has no such setting.
"""

from django.db import migrations

FILLFACTOR = 90


def _set(fillfactor_sql: str):
    def apply(apps, schema_editor):
        if schema_editor.connection.vendor != "postgresql":
            return
        schema_editor.execute(fillfactor_sql)

    return apply


class Migration(migrations.Migration):
    dependencies = [("curation", "0005_production_outputs")]

    operations = [
        migrations.RunPython(
            _set(f"ALTER TABLE curation_item SET (fillfactor = {FILLFACTOR})"),
            _set("ALTER TABLE curation_item RESET (fillfactor)"),
            elidable=False,
        )
    ]
