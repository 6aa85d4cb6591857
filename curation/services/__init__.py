"""Writes for curation, one module per area: projects, imports, queue, items."""
