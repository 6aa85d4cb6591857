"""REST endpoints for curation, one module per area."""
