"""Pagination that never counts: next/previous only.

``Paginator`` runs ``COUNT(*)`` over the whole filtered set on every page, which costs a
full scan at a million rows. A page here fetches one row more than it shows: that row
existing is all "is there a next page" needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DEFAULT_PER_PAGE = 50
MAX_PAGE = 10_000  # deep OFFSETs get slow; past this, narrow the filters instead


@dataclass(frozen=True)
class Page:
    object_list: list[Any]
    number: int
    per_page: int
    has_next: bool

    @property
    def has_previous(self) -> bool:
        return self.number > 1

    @property
    def next_page_number(self) -> int:
        return self.number + 1

    @property
    def previous_page_number(self) -> int:
        return self.number - 1

    @property
    def start_index(self) -> int:
        """1-based position of the first row shown (0 on an empty page)."""
        return (self.number - 1) * self.per_page + 1 if self.object_list else 0

    @property
    def end_index(self) -> int:
        return (self.number - 1) * self.per_page + len(self.object_list)


def parse_page_number(value: Any) -> int:
    """A page number from a query string: anything invalid is page 1, large values capped."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        return 1
    return min(max(number, 1), MAX_PAGE)


def paginate_without_count(queryset, number: Any, *, per_page: int = DEFAULT_PER_PAGE) -> Page:
    """Slice ``queryset`` (already ordered) to page ``number``, one query, no COUNT."""
    number = parse_page_number(number)
    offset = (number - 1) * per_page
    rows = list(queryset[offset : offset + per_page + 1])
    return Page(
        object_list=rows[:per_page], number=number, per_page=per_page, has_next=len(rows) > per_page
    )
