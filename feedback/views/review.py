"""The expert review page (htmx)."""
