"""Model instances from raw SQL rows, for the few hot paths that speak SQL directly.

``Model.objects.raw()`` resolves its column mapping and converters again on every call, which
on the review loop cost several times the query itself. A ``RowReader`` works them out once
per model and database vendor; the values are converted exactly as the ORM converts them
(``from_db_value``, e.g. JSON columns, which Django's PostgreSQL backend reads as text).
"""

from __future__ import annotations

from django.db import DEFAULT_DB_ALIAS, connections

from redline.lib.db import hot_cursor


class RowReader:
    """Reads instances of ``model`` from rows that hold its concrete columns in field order.

    ``reader.columns("i")`` is the select list (``i.id, i.project_id, ...``);
    ``reader.build(row)`` makes the instance from the first ``len(reader)`` values of a row,
    ``reader.build(row, offset)`` from the values starting at ``offset`` (joins).
    """

    def __init__(self, model):
        self.model = model
        self.fields = list(model._meta.concrete_fields)
        self.attnames = [f.attname for f in self.fields]
        self._converters: dict[str, list] = {}
        self._columns: dict[tuple[str, str], str] = {}

    def __len__(self) -> int:
        return len(self.fields)

    def columns(self, alias: str = "") -> str:
        connection = connections[DEFAULT_DB_ALIAS]
        key = (connection.vendor, alias)
        found = self._columns.get(key)
        if found is None:
            prefix = f"{alias}." if alias else ""
            quote = connection.ops.quote_name
            found = self._columns[key] = ", ".join(
                f"{prefix}{quote(f.column)}" for f in self.fields
            )
        return found

    def _converters_for_vendor(self, connection) -> list:
        vendor = connection.vendor
        found = self._converters.get(vendor)
        if found is None:
            found = []
            for index, field in enumerate(self.fields):
                col = field.get_col(self.model._meta.db_table)
                funcs = connection.ops.get_db_converters(col) + field.get_db_converters(connection)
                if funcs:
                    found.append((index, funcs, col))
            self._converters[vendor] = found
        return found

    def build(self, row, offset: int = 0):
        connection = connections[DEFAULT_DB_ALIAS]
        values = list(row[offset : offset + len(self.fields)])
        for index, funcs, col in self._converters_for_vendor(connection):
            value = values[index]
            for func in funcs:
                value = func(value, col, connection)
            values[index] = value
        return self.model.from_db(connection.alias, self.attnames, values)

    def fetch(self, sql: str, params) -> list:
        """Run ``sql`` (selecting ``self.columns(...)`` first) and build every row."""
        with hot_cursor() as cursor:
            cursor.execute(sql, params)
            return [self.build(row) for row in cursor.fetchall()]
